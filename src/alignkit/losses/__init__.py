"""Pure loss functions and explicit reductions (imports torch only)."""
