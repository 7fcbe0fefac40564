"""Stage: receive."""
