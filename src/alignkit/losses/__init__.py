"""Pure loss functions (imports torch only). Reductions are explicit and separate: alignkit.rl.aggregate."""
