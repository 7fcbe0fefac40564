"""Model gates: each built-in model's weights against its card's thresholds on phantoms."""
