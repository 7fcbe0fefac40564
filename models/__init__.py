"""Models: the built-in models, one folder each, and the kit their training scripts share."""
