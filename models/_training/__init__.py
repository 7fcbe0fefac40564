"""Training: the kit the built-in models' training scripts share."""
