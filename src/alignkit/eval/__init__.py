"""Evaluation: reward-model metrics, side-by-side comparison and reports."""
