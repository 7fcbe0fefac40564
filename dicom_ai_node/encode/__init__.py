"""Stage: encode."""
