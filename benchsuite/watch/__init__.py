"""`benchsuite watch -- COMMAND`: the gradient scanner on an unmodified training script."""
