"""Stage: route."""
