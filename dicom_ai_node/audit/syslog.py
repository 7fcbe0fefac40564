"""Audit: syslog messages (RFC 5424) and their transports, TLS (RFC 5425) and UDP (RFC 5426).

PS3.15 A.6 (SYSLOG-TLS) and A.7 (SYSLOG-UDP): the XML audit message is the MSG of a
syslog message with facility 10 (security/authorization) and, for most messages,
severity 5, so PRI is ``<85>``; MSGID is ``DICOM+RFC3881``. Over TLS each message is
framed by octet counting (RFC 5425 4.3); over UDP each goes in one datagram.
"""

from __future__ import annotations

import datetime as dt
import os
import select
import socket
import ssl
from typing import Protocol

__all__ = [
    "MSGID",
    "MessageTooLarge",
    "TlsTransport",
    "Transport",
    "UdpTransport",
    "syslog_message",
    "tls_context",
]

#: Facility 10: security/authorization messages (RFC 5424 Table 1, PS3.15 A.6).
FACILITY_SECURITY = 10
#: MSGID of DICOM audit messages (PS3.15 A.6).
MSGID = "DICOM+RFC3881"
#: The application name in the header.
APP_NAME = "dicom-ai-node"
#: Byte order mark that starts a UTF-8 MSG (RFC 5424 6.4).
BOM = b"\xef\xbb\xbf"
#: Largest payload of one UDP datagram over IPv4 (RFC 5426 3.2).
MAX_UDP_BYTES = 65507
#: Default ports: 514 for UDP (RFC 5426), 6514 for TLS (RFC 5425).
DEFAULT_PORTS = {"udp": 514, "tls": 6514}


class MessageTooLarge(ValueError):
    """A message the transport can never carry; it stays in the local log only."""


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit``; NILVALUE if empty."""
    text = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return text or "-"


def syslog_message(
    msg: bytes,
    *,
    severity: int,
    at: dt.datetime,
    hostname: str,
    procid: str,
    app_name: str = APP_NAME,
    msgid: str = MSGID,
) -> bytes:
    """One RFC 5424 message: header, no structured data, then BOM + ``msg`` (UTF-8).

    Parameters
    ----------
    msg:
        The XML audit message (PS3.15 A.6: the MSG part).
    severity:
        RFC 5424 severity, 0-7 (5, notice, for most audit messages).
    at:
        The TIMESTAMP (time zone aware; written in UTC, microseconds).
    hostname, procid:
        HOSTNAME (the node's name) and PROCID (the process ID).

    Raises
    ------
    ValueError
        For a severity outside 0-7 or a naive ``at``.
    """
    if not 0 <= severity <= 7:
        raise ValueError(f"syslog severity {severity} is not 0-7")
    if at.tzinfo is None:
        raise ValueError("syslog TIMESTAMP needs a time zone (RFC 5424 6.2.3)")
    stamp = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = " ".join(
        [
            f"<{FACILITY_SECURITY * 8 + severity}>1",
            stamp,
            _field(hostname, 255),
            _field(app_name, 48),
            _field(procid, 128),
            _field(msgid, 32),
            "-",  # STRUCTURED-DATA: none
        ]
    )
    return header.encode("ascii") + b" " + BOM + msg


class Transport(Protocol):
    """Carries one syslog message to the collector, or raises ``OSError``."""

    def send(self, message: bytes) -> None:
        """Send ``message``; ``OSError`` when the collector cannot be reached."""

    def close(self) -> None:
        """Close the connection, if any."""


class UdpTransport:
    """RFC 5426: one message per datagram, on a connected UDP socket.

    UDP confirms nothing; an ICMP "port unreachable" that has arrived by the time the
    datagram is sent (at once on the same host or LAN) is read back from the socket
    and reported as ``ConnectionRefusedError``, so that the message is kept for later.
    """

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self._sock: socket.socket | None = None

    def send(self, message: bytes) -> None:
        if len(message) > MAX_UDP_BYTES:
            raise MessageTooLarge(f"{len(message)} bytes do not fit one UDP datagram")
        try:
            if self._sock is None:
                info = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0]
                self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
                self._sock.connect(info[4])
            self._sock.send(message)
            error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def tls_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client context: TLS 1.2 or later (PS3.15 A.6), the collector's certificate checked.

    Parameters
    ----------
    ca_file:
        CA certificates to trust; empty uses the system's.
    cert_file, key_file:
        Our certificate and key, for collectors that authenticate nodes (ATNA).
    """
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


class TlsTransport:
    """RFC 5425: messages framed as ``MSG-LEN SP SYSLOG-MSG`` on one TLS connection."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, timeout_s: float = 5.0
    ) -> None:
        self.host, self.port = host, port
        self.context = context
        self.timeout_s = timeout_s
        self._sock: ssl.SSLSocket | None = None

    def _closed_by_peer(self, sock: ssl.SSLSocket) -> bool:
        """Whether the collector closed (or wrote to) the connection: it never sends data."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def send(self, message: bytes) -> None:
        if self._sock is not None and self._closed_by_peer(self._sock):
            self.close()
        try:
            if self._sock is None:
                raw = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
                try:
                    self._sock = self.context.wrap_socket(raw, server_hostname=self.host)
                except OSError:
                    raw.close()
                    raise
            self._sock.sendall(b"%d " % len(message) + message)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
