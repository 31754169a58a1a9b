"""Training: the fit loop (early stopping, LR schedule, exact resume) and which layers train."""
