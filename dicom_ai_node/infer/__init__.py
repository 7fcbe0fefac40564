"""Stage: infer."""
