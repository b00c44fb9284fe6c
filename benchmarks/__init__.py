"""One script per measured claim, run from the repository root as modules (``python -m benchmarks.sft_vs_trl``);
the shared plumbing is in :mod:`benchmarks.harness`. Figures: docs/benchmarks.md."""
