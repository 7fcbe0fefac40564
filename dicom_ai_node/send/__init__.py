"""Stage: send."""
