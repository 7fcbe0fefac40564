"""Logging, configured once: one line per record with the structured ids appended.

Messages carry UIDs and reasons only; patient names and IDs never go into a log record.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

_FIELDS = ("ae_title", "host", "port", "model", "device", "models", "study", "series", "job")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{k}={getattr(record, k)}" for k in _FIELDS if hasattr(record, k)]
        return f"{text} {' '.join(extras)}" if extras else text


def configure_logging(level: str = "INFO") -> None:
    """Send the node's records to stderr at ``level``; quiet pynetdicom's per-PDU chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
