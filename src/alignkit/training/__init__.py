"""Pieces every training loop shares: batching plan, optimizer, checkpoints, metrics, progress."""
