"""Receive: the gate before an association, so idle or slow connections cost no slot.

pynetdicom starts an association (and counts it against the maximum) as soon as a TCP
connection is accepted; a few connections that never send their A-ASSOCIATE-RQ then
lock real senders out until the ACSE timeout. Here each new connection first waits in
the gate, bounded in number and in time, until its whole A-ASSOCIATE-RQ PDU
(PS3.8 9.3.2) has arrived; only then is an association made, and only if the node has
room for it overall and for the calling host. Otherwise the request is rejected as
transient, temporary congestion (PS3.8 9.3.4: result 2, source 3, reason 1).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ

from .users import UserCheck

__all__ = [
    "A_ASSOCIATE_RQ_TYPE",
    "UNKNOWN_CALLER",
    "WRONG_CALLED",
    "Gate",
    "InvalidRequest",
    "Limits",
    "abort_pdu",
    "called_ae_title",
    "called_matches",
    "caller_known",
    "calling_ae_title",
    "check_association_request",
    "check_names",
    "read_association_request",
    "rejection_pdu",
    "resolve_callers",
]

log = logging.getLogger(__name__)

#: PDU type of A-ASSOCIATE-RQ (PS3.8 9.3.2).
A_ASSOCIATE_RQ_TYPE = 0x01
#: Largest PDU read when the maximum PDU length is unlimited, and for any PDU other than
#: P-DATA-TF (an A-ASSOCIATE-RQ with 128 presentation contexts is about 80 KB).
MAX_PDU_READ = 4 * 1024 * 1024
#: Default bound on one command set or data set held in memory.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024 * 1024
#: Largest A-ASSOCIATE-RQ read. The largest request the bounds below allow (128
#: presentation contexts of 64 transfer syntaxes, 64-character UIDs, and a User
#: Information item, itself at most 64 KiB) is about 640 KB.
MAX_REQUEST_BYTES = 1024 * 1024
#: Transfer syntaxes one presentation context may propose. PS3.8 sets no bound; pydicom
#: knows 39 and senders propose a handful. Each costs pynetdicom a few objects and a
#: negotiation step, so 4 MiB of them cost ~110 MB and seconds of CPU.
MAX_TRANSFER_SYNTAXES = 64


class InvalidRequest(ValueError):
    """The first PDU of a connection is not an acceptable A-ASSOCIATE-RQ."""


@dataclass(frozen=True)
class Limits:
    """What the listener bounds (``docs/security.md`` lists each with its setting).

    Parameters
    ----------
    max_message_bytes:
        Largest command set or data set held in memory.
    max_associations:
        Associations served at once; a request beyond it is rejected as congested.
    max_associations_per_address:
        Associations served at once for one calling host (0: no separate bound).
    max_pending_connections:
        Connections waiting for their A-ASSOCIATE-RQ at once; more are closed.
    request_timeout_s:
        How long a connection may take to send its whole A-ASSOCIATE-RQ.
    allowed_callers:
        When set, the only calling AE titles accepted, each with the addresses it may
        call from; anyone else is rejected (calling AE title not recognised).
    on_unknown_caller:
        Called with the calling AE title and address of each caller refused that way
        (the audit trail's Security Alert); its errors are logged, never raised.
    on_wrong_called:
        Called with the called AE title, the calling AE title and the address of each
        request refused because it called another AE title (when the listener checks
        it); likewise reported, never raised.
    users:
        When set, checks the User Identity Negotiation of each request
        (:class:`~.users.UserCheck`).
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_associations: int = 64
    max_associations_per_address: int = 32
    max_pending_connections: int = 256
    request_timeout_s: float = 10.0
    allowed_callers: Mapping[str, frozenset[str]] | None = None
    on_unknown_caller: Callable[[str, str], None] | None = field(default=None, compare=False)
    on_wrong_called: Callable[[str, str, str], None] | None = field(default=None, compare=False)
    users: UserCheck | None = field(default=None, compare=False)


def resolve_callers(entries: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    """The addresses each AE title may call from: its hosts, resolved once.

    A host that does not resolve is left out with a warning (its AE title can then
    call from none of its addresses until the node restarts).
    """
    allowed: dict[str, frozenset[str]] = {}
    for ae_title, hosts in entries.items():
        addresses: set[str] = set()
        for host in hosts:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except OSError as exc:
                log.warning("ae_table host %r of %s does not resolve: %s", host, ae_title, exc)
                continue
            addresses |= {str(info[4][0]) for info in infos}
        allowed[ae_title] = frozenset(addresses)
    return allowed


def called_ae_title(request: bytes) -> str:
    """The Called AE Title of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2: bytes 11-26)."""
    return request[10:26].decode("ascii", "replace").strip()


def calling_ae_title(request: bytes) -> str:
    """The Calling AE Title of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2: bytes 27-42)."""
    return request[26:42].decode("ascii", "replace").strip()


def caller_known(limits: Limits, request: bytes, address: str) -> bool:
    """Whether the calling AE title may associate from ``address``; reports a refusal."""
    if limits.allowed_callers is None:
        return True
    title = calling_ae_title(request)
    if address in limits.allowed_callers.get(title, frozenset()):
        return True
    if limits.on_unknown_caller is not None:
        try:
            limits.on_unknown_caller(title, address)
        except Exception:  # the refusal goes ahead whatever the report does
            log.exception("cannot report the refused caller %r from %s", title, address)
    return False


def called_matches(limits: Limits, request: bytes, ae_title: str, address: str) -> bool:
    """Whether the request calls ``ae_title`` (PS3.8 9.3.2); reports a refusal."""
    called = called_ae_title(request)
    if called == ae_title.strip():
        return True
    if limits.on_wrong_called is not None:
        try:
            limits.on_wrong_called(called, calling_ae_title(request), address)
        except Exception:  # the refusal goes ahead whatever the report does
            log.exception("cannot report the request for %r from %s", called, address)
    return False


class Gate:
    """Counts the connections waiting for their association request."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Take a place; False when all ``limit`` places are taken."""
        with self._lock:
            if self._waiting >= self.limit:
                return False
            self._waiting += 1
            return True

    def leave(self) -> None:
        """Give a place back."""
        with self._lock:
            self._waiting -= 1

    @property
    def waiting(self) -> int:
        """How many connections wait now."""
        with self._lock:
            return self._waiting


def _read_exact(sock: socket.socket, count: int, deadline: float) -> bytes | None:
    """``count`` bytes, or None when the peer closes or the deadline passes first."""
    chunks: list[bytes] = []
    left = count
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(left, 65536))
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_association_request(sock: socket.socket, timeout_s: float) -> bytes | None:
    """The whole first PDU of a connection, an A-ASSOCIATE-RQ; None when it never came.

    None means the peer closed or took longer than ``timeout_s`` for all of it. The
    socket's own timeout is restored afterwards.

    Raises
    ------
    InvalidRequest
        When the first PDU is of another type (PS3.8 9.2: only an A-ASSOCIATE-RQ is
        expected in Sta2) or claims more than :data:`MAX_REQUEST_BYTES` (nothing more
        is read), or when its items break :func:`check_association_request`.
    """
    previous = sock.gettimeout()
    deadline = time.monotonic() + timeout_s
    try:
        header = _read_exact(sock, 6, deadline)
        if header is None:
            return None
        if header[0] != A_ASSOCIATE_RQ_TYPE:
            raise InvalidRequest(f"first PDU of type 0x{header[0]:02X}, not an A-ASSOCIATE-RQ")
        length = int.from_bytes(header[2:6], "big")
        if length > MAX_REQUEST_BYTES:
            raise InvalidRequest(f"A-ASSOCIATE-RQ of {length} bytes (at most {MAX_REQUEST_BYTES})")
        body = _read_exact(sock, length, deadline)
        if body is None:
            return None
        request = header + body
        check_association_request(request)
        return request
    finally:
        sock.settimeout(previous)


#: Offset of the first variable item of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2, Table 9-11).
_RQ_ITEMS = 74
#: Item types of a presentation context and of its abstract and transfer syntax
#: sub-items (PS3.8 9.3.2.2).
_PRESENTATION_CONTEXT, _ABSTRACT_SYNTAX, _TRANSFER_SYNTAX = 0x20, 0x30, 0x40


def _items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The ``(type, start of value, end of value)`` of each item in ``data[start:end]``.

    Items (and sub-items) have a one-byte type, a reserved byte and a two-byte length
    (PS3.8 9.3.2.1-9.3.2.3).

    Raises
    ------
    InvalidRequest
        When an item's header or value runs past ``end``.
    """
    found = []
    while start < end:
        if end - start < 4:
            raise InvalidRequest("truncated item header in the A-ASSOCIATE-RQ")
        value = start + 4
        stop = value + int.from_bytes(data[start + 2 : value], "big")
        if stop > end:
            raise InvalidRequest(f"item 0x{data[start]:02X} runs past its PDU or context")
        found.append((data[start], value, stop))
        start = stop
    return found


def check_association_request(request: bytes) -> None:
    """Check what pynetdicom would otherwise decode at any size and without complaint.

    Every item must lie within the PDU; each presentation context ID must be odd
    (1-255) and used once (PS3.8 9.3.2.2), which bounds the contexts to 128; a context
    has one abstract syntax (without one pynetdicom's association thread dies while
    negotiating, and the peer waits for an answer) and may propose at most
    :data:`MAX_TRANSFER_SYNTAXES` transfer syntaxes. Anything else (item types, UIDs,
    the protocol version) is left to pynetdicom, which answers with an
    A-ASSOCIATE-RJ or an A-ABORT.

    Raises
    ------
    InvalidRequest
        Naming the first problem; the gate answers A-ABORT (invalid PDU parameter).
    """
    if len(request) < _RQ_ITEMS:
        raise InvalidRequest(f"A-ASSOCIATE-RQ of {len(request)} bytes is shorter than its fields")
    seen: set[int] = set()
    for kind, start, end in _items(request, _RQ_ITEMS, len(request)):
        if kind == _PRESENTATION_CONTEXT:
            _check_context(request, start, end, seen)


def _check_context(request: bytes, start: int, end: int, seen: set[int]) -> None:
    """Check one presentation context item (PS3.8 9.3.2.2); add its ID to ``seen``."""
    if end - start < 4:
        raise InvalidRequest("presentation context item too short for its ID")
    context_id = request[start]
    if not context_id % 2 or context_id in seen:
        raise InvalidRequest(f"presentation context ID {context_id} even or repeated")
    seen.add(context_id)
    kinds = [sub_kind for sub_kind, _, _ in _items(request, start + 4, end)]
    if kinds.count(_ABSTRACT_SYNTAX) != 1:
        raise InvalidRequest(
            f"presentation context {context_id} has {kinds.count(_ABSTRACT_SYNTAX)} "
            "abstract syntaxes (one)"
        )
    syntaxes = kinds.count(_TRANSFER_SYNTAX)
    if syntaxes > MAX_TRANSFER_SYNTAXES:
        raise InvalidRequest(
            f"presentation context {context_id} proposes {syntaxes} transfer syntaxes "
            f"(at most {MAX_TRANSFER_SYNTAXES})"
        )


#: Item type of the User Information item and of its Implementation Version Name
#: sub-item (PS3.8 9.3.2.3, PS3.7 D.3.3.2.2).
_USER_INFORMATION, _IMPLEMENTATION_VERSION_NAME = 0x50, 0x55
#: Characters of a name in the request (PS3.8 9.3.2, PS3.7 D.3.3.2.2): at most 16 of the
#: ISO 646 basic G0 set; like an AE value, no control characters, no backslash (PS3.5 6.2).
_NAME_LENGTH = 16
_NAME_BYTES = frozenset(range(0x20, 0x7F)) - {0x5C}


def _check_name(what: str, value: bytes, *, required: bool) -> None:
    """Raise :class:`InvalidRequest` unless ``value`` is a name as PS3.8 9.3.2 defines it."""
    if len(value) > _NAME_LENGTH or not _NAME_BYTES.issuperset(value):
        shown = value.strip(b" ").decode("latin-1")
        raise InvalidRequest(
            f"{what} {shown!r} is not up to {_NAME_LENGTH} characters of ISO 646 without "
            "control characters or backslash"
        )
    if required and not value.strip(b" "):
        raise InvalidRequest(f"{what} is empty or all spaces")


def check_names(request: bytes) -> None:
    """Check the names of an A-ASSOCIATE-RQ that pynetdicom cannot decode otherwise.

    The Called and Calling AE Titles (PS3.8 9.3.2: 16 characters of the ISO 646 basic
    G0 set, spaces not significant, not all spaces) and the Implementation Version Name
    (PS3.7 D.3.3.2.2: up to 16 such characters) must not hold control characters or a
    backslash (PS3.5 6.2, AE). pynetdicom refuses such a request too, but only after
    logging the value raw (a byte outside ASCII with a traceback): CWE-117.

    Raises
    ------
    InvalidRequest
        Naming the field and its value (as a Python literal: control characters
        escaped); the gate answers A-ABORT (invalid PDU parameter value).
    """
    _check_name("called AE title", request[10:26], required=True)
    _check_name("calling AE title", request[26:42], required=True)
    for kind, start, end in _items(request, _RQ_ITEMS, len(request)):
        if kind != _USER_INFORMATION:
            continue
        for sub_kind, sub_start, sub_end in _items(request, start, end):
            if sub_kind == _IMPLEMENTATION_VERSION_NAME:
                name = request[sub_start:sub_end]
                _check_name("implementation version name", name, required=False)


def abort_pdu() -> bytes:
    """A-ABORT from the service provider: invalid PDU parameter value (PS3.8 9.3.8)."""
    pdu = A_ABORT_RQ()
    pdu.source = 0x02
    pdu.reason_diagnostic = 0x06
    return bytes(pdu.encode())


def rejection_pdu(result: int = 0x02, source: int = 0x03, reason: int = 0x01) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4, Table 9-21).

    The default is rejected-transient, service-provider (presentation), temporary
    congestion; :data:`UNKNOWN_CALLER` is rejected-permanent, service-user, calling AE
    title not recognised.
    """
    pdu = A_ASSOCIATE_RJ()
    pdu.result = result
    pdu.source = source
    pdu.reason_diagnostic = reason
    return bytes(pdu.encode())


#: Result, source and reason of a rejection for an unknown calling AE title.
UNKNOWN_CALLER = (0x01, 0x01, 0x03)
#: Result, source and reason of a rejection for a request that called another AE title.
WRONG_CALLED = (0x01, 0x01, 0x07)
#: Rejection of a refused user identity: rejected-permanent, service-user, no reason
#: given (PS3.8 9.3.4; PS3.7 D.3.3.7 names no reason of its own).
USER_REFUSED = (0x01, 0x01, 0x01)
