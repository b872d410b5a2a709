"""Networks: the preset registry (architecture + training recipe) and airbench's optimizers.
Uses data and the shared modules below it, never inference or training."""
