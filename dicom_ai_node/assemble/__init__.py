"""Stage: assemble."""
