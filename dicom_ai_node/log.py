"""Core: logging, configured once: one line per record with the structured ids appended.

Messages carry UIDs and reasons only; patient names and IDs never go into a log record.

Text a peer controls (AE titles, UIDs, usernames, descriptions, reasons quoting a PDU)
reaches log records, the node's and third-party libraries' alike. A line break in it
would let the peer start a line that reads as a record of its own, and an escape
sequence could rewrite what a terminal shows (CWE-117, log neutralization). So the one
handler installed here writes every record through :class:`LineFormatter`: control
characters are escaped (``\\r``, ``\\n``, ``\\x1b``, ...), so a record is one line; the
lines of a traceback follow it, each behind :data:`CONTINUATION`, so no line a peer
can influence starts where a record starts. Python warnings and uncaught exceptions in
threads go through the same handler.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from types import TracebackType

__all__ = ["CONTINUATION", "LineFormatter", "configure_logging", "escape_controls"]

_FIELDS = ("ae_title", "host", "port", "model", "device", "models", "study", "series", "job")

#: Characters never written raw: C0 controls (line feed, carriage return, escape, ...),
#: DEL, C1 controls (NEL among them), the Unicode line and paragraph separators, and the
#: bidirectional controls that reorder what a terminal shows (CVE-2021-42574).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

#: What starts each line of a traceback or stack after the record's own line.
CONTINUATION = "  | "

log = logging.getLogger(__name__)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with each control character written as an escape (CWE-117).

    Tab, line feed and carriage return become ``\\t``, ``\\n``, ``\\r``; other C0 and
    C1 controls and DEL ``\\xNN``; U+2028, U+2029 and the bidirectional controls
    ``\\uNNNN``. A backslash is left as it is, so the escaping is for reading, not for
    reversing.
    """
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


class LineFormatter(logging.Formatter):
    """One line per record, whatever its text; a traceback's lines marked as its own.

    The record's line (time, level, logger, message and the structured ids of
    ``_FIELDS``) is escaped as a whole by :func:`escape_controls`. A traceback
    (``exc_info``) or stack (``stack_info``) keeps its line breaks, for reading, with
    every other control character escaped and each of its lines behind
    :data:`CONTINUATION`: an exception message that quotes a peer's line break starts a
    continuation line, never a line of its own.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        extras = [f"{k}={getattr(record, k)}" for k in _FIELDS if hasattr(record, k)]
        if extras:
            text = f"{text} {' '.join(extras)}"
        lines = [escape_controls(text)]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if block:
                lines += [CONTINUATION + escape_controls(line) for line in block.split("\n")]
        return "\n".join(lines)


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    """Log an exception that ended a thread (instead of printing it raw to stderr)."""
    if issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    if args.exc_value is None:
        log.error("uncaught %s in thread %s", args.exc_type.__name__, name)
        return
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    log.error("uncaught exception in thread %s", name, exc_info=exc_info)


def _uncaught_exception(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """Log an exception that ends the process (Ctrl-C is left to Python)."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    log.critical("uncaught exception", exc_info=(exc_type, exc, tb))


def configure_logging(level: str = "INFO") -> None:
    """Send every record to stderr at ``level``, one line each; quiet pynetdicom's chatter.

    Installs :class:`LineFormatter` on the root logger's only handler, so records of
    every library are escaped too; routes Python warnings (which may quote a peer's
    value) and uncaught exceptions of threads and of the process through it.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception
    sys.excepthook = _uncaught_exception
