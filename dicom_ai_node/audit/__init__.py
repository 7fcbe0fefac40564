"""Stage: audit."""
