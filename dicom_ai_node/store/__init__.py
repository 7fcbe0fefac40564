"""Store: durable files, the index database and every query the node runs."""
