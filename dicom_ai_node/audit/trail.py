"""Audit: the audit trail -- a local append-only log, plus forwarding to syslog.

Every message is checked against the schema (a departure is an error in the
application log, naming the place, never the values), appended to the local audit log
as one line and fsynced before :meth:`AuditTrail.record` returns, then handed to the
syslog forwarder, which never blocks the caller. Recording never raises: an audit
problem must not stop the node from serving.

A message is one line of the local log and one syslog record whatever text of a peer
it carries: the message builders clean that text (:mod:`.messages`), and
:func:`one_line` writes any line break left (a builder's bug) as a character
reference, which XML reads as the same character (CWE-117).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .forward import SyslogForwarder
from .messages import AuditMessage
from .syslog import syslog_message
from .validate import validate

__all__ = ["AuditLog", "AuditTrail", "one_line"]

log = logging.getLogger(__name__)

#: Line breaks in any reading, as UTF-8, and the XML character reference of each.
_BREAKS = {
    b"\n": b"&#10;",
    b"\r": b"&#13;",
    b"\x0b": b"&#11;",
    b"\x0c": b"&#12;",
    b"\x1c": b"&#28;",
    b"\x1d": b"&#29;",
    b"\x1e": b"&#30;",
    b"\xc2\x85": b"&#133;",
    b"\xe2\x80\xa8": b"&#8232;",
    b"\xe2\x80\xa9": b"&#8233;",
}


def one_line(xml: bytes) -> bytes:
    """``xml`` (UTF-8) with every line break written as a character reference.

    Inside an element or an attribute a reference stands for the same character
    (XML 1.0 4.1), so the message says what it said, on one line. VT, FF, FS, GS and
    RS, which XML 1.0 cannot hold at all, stay not well-formed (the schema check
    reports it) but on one line.
    """
    for raw, reference in _BREAKS.items():
        if raw in xml:
            xml = xml.replace(raw, reference)
    return xml


class AuditLog:
    """An append-only file of audit messages, one per line, each write fsynced.

    Parameters
    ----------
    path:
        The file (mode 0600, its folder 0700 when created).

    Raises
    ------
    ConfigError
        When the file cannot be opened for appending (fail at start-up).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not path.exists()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd: int | None = os.open(path, flags, 0o600)
            if created:
                folder = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log {path}: {exc}") from exc
        self._lock = threading.Lock()

    def append(self, xml: bytes) -> None:
        """Write one message as a line and fsync it.

        Raises
        ------
        OSError
            When the write or the fsync fails (disk full, closed).
        """
        line = memoryview(xml + b"\n")
        with self._lock:
            if self._fd is None:
                raise OSError("the audit log is closed")
            while line:
                line = line[os.write(self._fd, line) :]
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class AuditTrail:
    """Where audit messages go: the local log and/or the syslog forwarder.

    Parameters
    ----------
    local:
        The local audit log, or None when switched off.
    forwarder:
        The syslog forwarder, or None when no collector is configured.
    hostname, procid:
        HOSTNAME and PROCID of the syslog header.
    clock:
        Current UTC time (the syslog TIMESTAMP).
    """

    def __init__(
        self,
        local: AuditLog | None,
        forwarder: SyslogForwarder | None,
        *,
        hostname: str,
        procid: str,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.local = local
        self.forwarder = forwarder
        self.hostname = hostname
        self.procid = procid
        self.clock = clock
        self.invalid = 0  # messages that did not follow the schema (a bug)

    def start(self) -> None:
        """Start forwarding."""
        if self.forwarder is not None:
            self.forwarder.start()

    def record(self, message: AuditMessage) -> None:
        """Check, write durably and forward one audit message; never raises."""
        xml = one_line(message.xml)
        problems = validate(xml)
        if problems:  # recorded all the same: a flawed record beats no record
            self.invalid += 1
            log.error(
                "%s audit message departs from the schema (PS3.15 A.5.1): %s",
                message.event.meaning,
                "; ".join(f"{p.path}: {p.kind}" for p in problems[:5]),
            )
        if self.local is not None:
            try:
                self.local.append(xml)
            except OSError as exc:
                log.error("cannot write the local audit log: %s", exc)
        if self.forwarder is not None:
            try:
                framed = syslog_message(
                    xml,
                    severity=message.severity,
                    at=self.clock(),
                    hostname=self.hostname,
                    procid=self.procid,
                )
            except ValueError as exc:
                log.error("cannot make a syslog message: %s", exc)
                return
            self.forwarder.submit(framed)

    def close(self, timeout_s: float = 5.0) -> None:
        """Forward what is queued (or spool it), then close the local log."""
        if self.forwarder is not None:
            self.forwarder.stop(timeout_s)
        if self.local is not None:
            self.local.close()
