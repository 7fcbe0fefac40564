"""Send: results delivered to their destinations by C-STORE, retried until a window ends."""
