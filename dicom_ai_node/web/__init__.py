"""Web: the operator's window: HTTP API, screens, metrics endpoint."""
