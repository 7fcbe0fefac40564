"""Send: results delivered to their destinations by C-STORE or STOW-RS, retried until a
window ends."""
