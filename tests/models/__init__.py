"""Model gates: each built-in model's weights measured against its card's thresholds on held-out phantoms."""
