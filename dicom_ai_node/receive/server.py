"""Receive: the association server: pynetdicom's acceptor with event-driven reactors (PS3.8 9.2).

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps between
checks of its socket and of its outgoing queue, and the association thread sleeps 1 ms
before each look at the incoming DIMSE messages. On one association a C-STORE crosses
both loops twice (request in, response out), so the polling adds its delay, and a busy
DUL thread polling every 0.1 ms competes with the handler for the GIL and the CPU.

Here the loops wait on the events themselves instead:

* the DUL thread blocks in ``select`` on its socket and a wake-up socket written
  whenever a primitive is queued for sending (:mod:`.dul`);
* the association thread blocks on an event set when a DIMSE message, an A-RELEASE or
  an A-ABORT arrives, or when the DUL stops (:mod:`.association`);
* a C-STORE request is served in the DUL thread as soon as it is complete, so that its
  response leaves from the thread that received it (no hand-off either way).

The loops keep pynetdicom's logic (same state machine, same checks in the same order);
only the waiting changes. Per association, pynetdicom's own work is also trimmed: the
supported contexts are not deep-copied, each PDU is read into one buffer (not 4 KiB
pieces, :mod:`.transport`), the fragments of a P-DATA-TF PDU are views of that buffer
(:mod:`.pdu`), plain C-STORE responses are encoded directly (:mod:`.response`), and its
logging handlers are not bound while its logger drops INFO anyway. Each connection
waits in the gate (:mod:`.gate`) for its A-ASSOCIATE-RQ before it becomes an association.

These layers reproduce pynetdicom 3.0.x internals: with another version
:func:`start_server` falls back to pynetdicom's own classes (and logs it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.transport import (
    RequestHandler,
    ThreadedAssociationServer,
)
from pynetdicom.utils import make_target

from ..domain import AssociationOutcome
from .association import EventDrivenAssociation
from .dul import EventDrivenDUL
from .gate import (
    UNKNOWN_CALLER,
    USER_REFUSED,
    WRONG_CALLED,
    Gate,
    InvalidRequest,
    Limits,
    abort_pdu,
    called_ae_title,
    called_matches,
    caller_known,
    calling_ae_title,
    check_names,
    read_association_request,
    rejection_pdu,
)
from .transport import PduSocket
from .watch import AssociationWatch

__all__ = ["VALIDATED_PYNETDICOM", "is_supported", "start_server"]

log = logging.getLogger(__name__)

#: pynetdicom versions whose reactor loops these classes reproduce.
VALIDATED_PYNETDICOM = ("3.0.",)

#: pynetdicom's logging handlers that are unbound when their logger drops INFO anyway.
_QUIET_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def is_supported(version: str | None = None) -> bool:
    """Whether the installed (or given) pynetdicom version is one these loops reproduce."""
    version = version or str(pynetdicom.__version__)
    return version.startswith(VALIDATED_PYNETDICOM)


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server with the node's limits, its gate and optional TLS.

    pynetdicom runs the TLS handshake in its accepting thread, where one client that
    never finishes it stops every other connection; here the handshake runs in the
    connection's own thread, within the gate and its deadline.
    """

    limits: Limits
    gate: Gate
    tls: ssl.SSLContext | None = None
    on_tls_failure: Callable[[str, str], None] | None = None
    watch: AssociationWatch | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection (never wrapped here; see the class description)."""
        client, address = cast(socket.socket, self.socket).accept()
        return client, address


class _RequestHandler(RequestHandler):
    """Makes an :class:`EventDrivenAssociation` per connection, TCP_NODELAY on.

    Each connection's end is reported to the server's watch (:mod:`.watch`), if any: a
    refusal here, or the association's own end.
    """

    _request: bytes = b""
    _started_at: datetime | None = None
    #: Why the connection is being refused (set where the refusal is decided).
    _why: tuple[AssociationOutcome, str] = (AssociationOutcome.REFUSED, "")

    def handle(self) -> None:
        """Wait in the gate for the A-ASSOCIATE-RQ, then make the association (or not)."""
        sock = cast(socket.socket, self.request)
        # Nagle's algorithm would hold each small response ~40 ms behind a delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = cast(_Server, self.server)
        if server.watch is not None:
            self._started_at = server.watch.clock()
        limits, gate = server.limits, server.gate
        if not gate.enter():
            log.warning("closed a connection: %d already wait for an association", gate.limit)
            return self._refuse(sock, reason=f"{gate.limit} connections already waiting")
        try:
            if server.tls is not None:
                secured = self._handshake(sock, server, limits.request_timeout_s)
                if secured is None:
                    return self._report(b"")
                self.request = sock = secured
            request = read_association_request(sock, limits.request_timeout_s)
        except InvalidRequest as exc:
            log.warning("aborted a connection before its association: %s", exc)
            return self._refuse(sock, abort_pdu(), reason=str(exc))
        finally:
            gate.leave()
        if request is None:  # closed, or too slow
            reason = f"no association request within {limits.request_timeout_s:g} s"
            return self._refuse(sock, reason=reason)
        refusal = self._refusal(limits, request)
        if refusal is not None:
            self._close(sock, refusal)
            return self._report(request)
        self._request = request
        super().handle()
        return None

    def _refuse(self, sock: socket.socket, last_pdu: bytes = b"", *, reason: str) -> None:
        """Close before any association request was read, and report why."""
        self._close(sock, last_pdu)
        self._why = (AssociationOutcome.REFUSED, reason)
        self._report(b"")

    def _report(self, request: bytes) -> None:
        """Tell the watch (if any) that this connection ended before an association."""
        watch = cast(_Server, self.server).watch
        if watch is None or self._started_at is None:
            return
        outcome, reason = self._why
        watch.refused(self.client_address[0], request, outcome, reason, self._started_at)

    def _refusal(self, limits: Limits, request: bytes) -> bytes | None:
        """The PDU refusing ``request`` (A-ASSOCIATE-RJ or A-ABORT), or None to accept it.

        Checks, in this order: the caller (audited), the called AE title (audited), the
        user identity (audited), the names pynetdicom cannot decode
        (:func:`~.gate.check_names`; after the audited checks, so that a refused caller
        is audited whatever its title holds) and the room left.
        """
        address = self.client_address[0]
        if not caller_known(limits, request, address):
            log.warning(
                "association rejected: calling AE title %r from %s not recognised",
                calling_ae_title(request),
                address,
            )
            self._why = (AssociationOutcome.REJECTED, "calling AE title not recognised")
            return rejection_pdu(*UNKNOWN_CALLER)
        if self.ae.require_called_aet and not called_matches(
            limits, request, self.server.ae_title, address
        ):
            log.warning(
                "association rejected: called AE title %r from %s is not ours",
                called_ae_title(request),
                address,
            )
            self._why = (AssociationOutcome.REJECTED, "called AE title not recognised")
            return rejection_pdu(*WRONG_CALLED)
        refused = limits.users.refusal(request, address) if limits.users else None
        if refused is not None:
            log.warning("association rejected: user identity from %s refused: %s", address, refused)
            self._why = (AssociationOutcome.REJECTED, f"user identity refused: {refused}")
            return rejection_pdu(*USER_REFUSED)
        try:
            check_names(request)
        except InvalidRequest as exc:
            log.warning("aborted a connection before its association: %s", exc)
            self._why = (AssociationOutcome.REFUSED, str(exc))
            return abort_pdu()
        if self._congested(limits):
            self._why = (AssociationOutcome.REJECTED, "no room for another association")
            return rejection_pdu()
        return None

    def _handshake(
        self, sock: socket.socket, server: _Server, timeout_s: float
    ) -> ssl.SSLSocket | None:
        """The TLS handshake within ``timeout_s`` (PS3.15 B.9); None (closed) when it fails.

        A failure (plaintext, a protocol version or cipher suite outside BCP 195, an
        untrusted or missing certificate, a silent peer) is logged and reported to the
        server's ``on_tls_failure`` (the audit trail's Security Alert).
        """
        address = self.client_address[0]
        assert server.tls is not None
        sock.settimeout(timeout_s)
        try:
            wrapped = server.tls.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            reason = _tls_reason(exc)
            log.warning("TLS handshake with %s failed: %s", address, reason)
            self._why = (AssociationOutcome.REFUSED, f"TLS handshake failed: {reason}")
            if server.on_tls_failure is not None:
                try:
                    server.on_tls_failure(address, reason)
                except Exception:  # the refusal goes ahead whatever the report does
                    log.exception("cannot report the failed TLS handshake from %s", address)
            self._close(sock)
            return None
        wrapped.settimeout(None)
        return wrapped

    @staticmethod
    def _close(sock: socket.socket, last_pdu: bytes = b"") -> None:
        """Send ``last_pdu`` (an A-ABORT or A-ASSOCIATE-RJ), if any, and close."""
        with contextlib.suppress(OSError):
            if last_pdu:
                sock.sendall(last_pdu)
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _congested(self, limits: Limits) -> bool:
        """Whether the node has no room for another association, overall or for this host."""
        active = [a for a in self.ae.active_associations if a.is_acceptor]
        if len(active) >= limits.max_associations:
            log.warning("association rejected: %d associations already served", len(active))
            return True
        host = self.client_address[0]
        same = sum(1 for a in active if a.requestor.address == host)
        if limits.max_associations_per_address and same >= limits.max_associations_per_address:
            log.warning("association rejected: %d associations already served for %s", same, host)
            return True
        return False

    def _create_association(self) -> Association:
        """As pynetdicom's, with the event-driven classes."""
        assoc = EventDrivenAssociation(self.ae, "acceptor")
        assoc._server = self.server
        watch = cast(_Server, self.server).watch
        if watch is not None and self._started_at is not None:
            watch.begin(assoc, self.client_address[0], self._request, self._started_at)
            assoc.on_end = watch.end
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        wrapped = PduSocket(assoc, client_socket=self.request)
        wrapped.pending = bytearray(self._request)
        # pynetdicom leaves an acceptor's socket blocking without a timeout: a peer that
        # stops within a PDU, or never reads, would hold the DUL thread for good
        wrapped.pdu_timeout = assoc.network_timeout
        cast(socket.socket, self.request).settimeout(assoc.network_timeout)
        assoc.set_socket(wrapped)
        limits = cast(_Server, self.server).limits
        cast(EventDrivenDUL, assoc.dul).max_message_bytes = limits.max_message_bytes
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        # pynetdicom deep-copies the ~200 contexts here (~35 ms per association); a list
        # copy is enough: negotiation only reads them and the node never changes them
        acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler in cast(list[tuple[Any, Any]], handlers):
                    assoc.bind(event, handler[0], handler[1])
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
            # pynetdicom's logging handlers run for every PDU and message even when their
            # records are dropped; the one for a C-STORE request copies the data set
            for quiet_event, quiet_handler in _QUIET_HANDLERS:
                assoc.unbind(quiet_event, quiet_handler)
        return assoc


def _tls_reason(exc: BaseException) -> str:
    """A short reason for a failed handshake (OpenSSL's, e.g. CERTIFICATE_VERIFY_FAILED)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "no handshake within the deadline"
    return type(exc).__name__


def start_server(
    ae: pynetdicom.AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    limits: Limits | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    on_tls_failure: Callable[[str, str], None] | None = None,
    watch: AssociationWatch | None = None,
) -> ThreadedAssociationServer:
    """Start a non-blocking association server for ``ae``, as ``AE.start_server`` does.

    With a validated pynetdicom version the associations use the event-driven reactors,
    behind the gate (:mod:`.gate`) and within ``limits``; otherwise pynetdicom's own
    server is started (with only its own limits) and a warning logged. With ``tls``
    every connection must complete a TLS handshake first (PS3.15 B.9). ``watch`` is
    told how each connection and association ended (not with pynetdicom's own server).
    """
    limits = limits or Limits()
    if not is_supported():
        if tls is not None:
            raise RuntimeError(
                f"DICOM TLS needs a pynetdicom version the node is validated with"
                f" ({', '.join(v + 'x' for v in VALIDATED_PYNETDICOM)})"
            )
        log.warning(
            "pynetdicom %s is not one the event-driven reactors are validated with (%s); "
            "using its polling reactors",
            pynetdicom.__version__,
            ", ".join(v + "x" for v in VALIDATED_PYNETDICOM),
        )
        return cast(
            ThreadedAssociationServer,
            ae.start_server(address, block=False, evt_handlers=evt_handlers),
        )
    server = cast(
        _Server,
        ae.make_server(
            address,
            evt_handlers=evt_handlers,
            server_class=_Server,
            request_handler=_RequestHandler,
        ),
    )
    server.limits = limits
    server.gate = Gate(limits.max_pending_connections)
    server.tls, server.on_tls_failure = tls, on_tls_failure
    server.watch = watch
    # socketserver listens with a backlog of 5: a burst of connections beyond it waits
    # for SYN retransmits (1 s, 3 s, ...); Linux takes a new backlog from a second listen
    cast(socket.socket, server.socket).listen(max(limits.max_pending_connections, 5))
    thread = threading.Thread(
        target=make_target(server.serve_forever),
        name=f"AcceptorServer@{address[1]}",
        daemon=True,
    )
    thread.start()
    ae._servers.append(server)  # so that AE.shutdown() stops it too
    return server
