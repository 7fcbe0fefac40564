"""Infer: the built-in runners, each imported when a manifest names it (see ``runner``)."""

__all__: list[str] = []
