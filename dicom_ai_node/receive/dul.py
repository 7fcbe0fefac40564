"""Receive: event-driven reactors for pynetdicom's association acceptor (PS3.8 9.2).

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps between
checks of its socket and of its outgoing queue, and the association thread sleeps 1 ms
before each look at the incoming DIMSE messages. On one association a C-STORE crosses
both loops twice (request in, response out), so the polling adds its delay, and a busy
DUL thread polling every 0.1 ms competes with the handler for the GIL and the CPU.

Here the loops wait on the events themselves instead:

* the DUL thread blocks in ``select`` on its socket and a wake-up socket written
  whenever a primitive is queued for sending;
* the association thread blocks on an event set when a DIMSE message, an A-RELEASE or
  an A-ABORT arrives, or when the DUL stops;
* a C-STORE request is served in the DUL thread as soon as it is complete, so that its
  response leaves from the thread that received it (no hand-off either way).

The loops keep pynetdicom's logic (same state machine, same checks in the same order);
only the waiting changes. Per association, pynetdicom's own work is also trimmed: the
supported contexts are not deep-copied, each PDU is read into one buffer (not 4 KiB
pieces), the fragments of a P-DATA-TF PDU are views of that buffer (pynetdicom copies
each one three times before the DIMSE layer copies it again), plain C-STORE responses
are encoded directly (:mod:`.response`), and its logging handlers are not bound while
its logger drops INFO anyway.

A PDU or message pynetdicom cannot decode, or a state machine action that fails on
what the peer sent, is logged in one line with the reason and ends the association as
in pynetdicom; pynetdicom logs these twice, with a traceback (CWE-117: the reason may
quote the peer's bytes, which the log's formatter escapes, :mod:`dicom_ai_node.log`).

These classes reproduce pynetdicom 3.0.x internals: with another version
:func:`start_server` falls back to pynetdicom's own classes (and logs it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
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
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import ACTIONS, TRANSITION_TABLE, InvalidEventError, StateMachine
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)
from pynetdicom.utils import make_target

from .gate import (
    A_ASSOCIATE_RQ_TYPE,
    MAX_MESSAGE_BYTES,
    MAX_PDU_READ,
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
from .response import StoreResponseDIMSE
from .status import CANNOT_UNDERSTAND, UNRECOGNIZED_OPERATION

__all__ = [
    "VALIDATED_PYNETDICOM",
    "EventDrivenAssociation",
    "EventDrivenDUL",
    "is_supported",
    "start_server",
]

log = logging.getLogger(__name__)

#: pynetdicom versions whose reactor loops these classes reproduce.
VALIDATED_PYNETDICOM = ("3.0.",)

#: pynetdicom's logging handlers that are unbound when their logger drops INFO anyway.
_QUIET_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)

#: Longest wait before the loops look at their timers (ARTIM, network idle timeout).
TIMER_CHECK_S = 0.05

#: The DIMSE requests the node serves (PS3.4 A.4 Verification, B.2 Storage).
_SERVED = (C_ECHO, C_STORE)


def is_supported(version: str | None = None) -> bool:
    """Whether the installed (or given) pynetdicom version is one these loops reproduce."""
    version = version or str(pynetdicom.__version__)
    return version.startswith(VALIDATED_PYNETDICOM)


class _NotifyingQueue(queue.Queue[Any]):
    """A queue that calls ``notify`` after every ``put``."""

    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _Requests(_NotifyingQueue):
    """The DIMSE message queue; C-STORE requests are served as they arrive instead.

    pynetdicom's DUL thread puts each complete message here for the association thread
    to serve. A C-STORE request is served right away in the DUL thread: the response is
    then sent by the same thread, without two thread hand-offs per instance. Other
    messages (C-ECHO, responses to requests the node made) are queued as before.
    Without asynchronous operations (not negotiated) the peer waits for each response,
    so the order of messages is kept.
    """

    def __init__(self, assoc: EventDrivenAssociation) -> None:
        super().__init__(assoc._work.set)
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, primitive = item
        if (
            isinstance(primitive, C_STORE)
            and primitive.MessageIDBeingRespondedTo is None  # a request, not a response
            and context_id in self._assoc._accepted_cx
            and self.empty()
        ):
            self._assoc._serve_request(primitive, context_id)
            return
        super().put(item, block, timeout)


#: PDU type of P-DATA-TF (PS3.8 9.3.5).
P_DATA_TF_TYPE = 0x04
#: The PDU types of the upper layer protocol (PS3.8 9.3.1) and their names.
PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}
#: A receive buffer grows by at most this much before the bytes for it have arrived.
RECV_STEP = 1024 * 1024


class PduTooLong(ValueError):
    """A PDU longer than the node reads (PS3.8 D.1): the association is aborted."""


class MessageTooLarge(ValueError):
    """A DIMSE command or data set larger than the node holds: the association is aborted."""


class PduTimeout(Exception):
    """A PDU that did not arrive whole within its deadline: the association is aborted.

    Not an ``OSError``: pynetdicom's PDU reader takes those for a closed connection
    (Evt17) and would close without an A-ABORT; this one reaches the reactor's handler.
    """


def pdu_limit(pdu_type: int, max_pdu: int) -> int:
    """The longest PDU (length field, PS3.8 9.3) the node reads of a type.

    A P-DATA-TF PDU may not exceed the Maximum Length Received the node proposed
    (``max_pdu``; PS3.8 D.1); any other PDU, or P-DATA-TF when ``max_pdu`` is 0
    (unlimited), is bounded by :data:`MAX_PDU_READ`.
    """
    if pdu_type == P_DATA_TF_TYPE and max_pdu:
        return max_pdu
    return MAX_PDU_READ


class _Socket(AssociationSocket):
    """An AssociationSocket reading each PDU into one buffer (not 4 KiB pieces).

    The buffer grows as the bytes arrive (at most :data:`RECV_STEP` ahead), so a length
    field claiming gigabytes costs no memory until a peer really sends them. Each read
    (a PDU header, then its body) must complete within :attr:`pdu_timeout` of its
    start, so that a peer trickling bytes, or stopping within a PDU, cannot hold the
    association's thread, its slot and its buffer: pynetdicom's idle timer (the network
    timeout) is looked at only between PDUs.
    """

    #: Seconds one read may take; the socket's own timeout must be the same (None:
    #: unbounded, as pynetdicom leaves an acceptor's socket).
    pdu_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Bytes read before the association existed (its A-ASSOCIATE-RQ), served first.
        self.pending = bytearray()

    @property
    def ready(self) -> bool:
        """Whether there is something to read (pending bytes count)."""
        return bool(self.pending) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        if self.pending:
            served = self.pending[:nr_bytes]
            del self.pending[:nr_bytes]
            if len(served) == nr_bytes:
                return served
            return served + self.recv(nr_bytes - len(served))
        buffer = bytearray(min(nr_bytes, RECV_STEP))
        nr_read = 0
        timeout = self.pdu_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        shortened = False  # the socket's timeout, cut to what is left of the deadline
        try:
            while nr_read < nr_bytes:
                if nr_read == len(buffer):
                    buffer.extend(bytes(min(nr_bytes - nr_read, RECV_STEP)))
                if nr_read and deadline is not None:  # a second recv: the clock runs
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    shortened = True
                with memoryview(buffer) as view:
                    got = sock.recv_into(view[nr_read:])
                if not got:  # the peer closed the connection: return what was read
                    break
                nr_read += got
        except TimeoutError as exc:
            raise PduTimeout(f"{nr_read} of {nr_bytes} bytes of a PDU in {timeout} s") from exc
        finally:
            if shortened:
                sock.settimeout(timeout)
        if nr_read < len(buffer):
            del buffer[nr_read:]
        return buffer


class _PData:
    """A received P-DATA-TF PDU as the state machine's DT-2 action uses it.

    Its PDVs are ``[presentation context ID, message control header + fragment]``,
    each a memoryview of the PDU's buffer (PS3.8 9.3.5.1, E.2).
    """

    __slots__ = ("pdvs",)

    def __init__(self, pdvs: list[list[Any]]) -> None:
        self.pdvs = pdvs

    def to_primitive(self) -> P_DATA:
        """The P-DATA indication for the DIMSE layer."""
        primitive = P_DATA()
        # the property setter accepts only bytes; the DIMSE layer reads these as bytes
        primitive._presentation_data_value_list = cast(list[tuple[int, bytes]], self.pdvs)
        return primitive


def split_pdvs(body: memoryview) -> list[list[Any]]:
    """The PDV items of a P-DATA-TF PDU body (after its 6-byte header), without copying.

    Raises
    ------
    ValueError
        When an item's length runs past the PDU or is too short to hold a presentation
        context ID and a message control header (PS3.8 9.3.5.1).
    """
    pdvs: list[list[Any]] = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise ValueError("truncated PDV item")
        item_length = int.from_bytes(body[offset : offset + 4], "big")
        if item_length < 2 or offset + 4 + item_length > end:
            raise ValueError(f"PDV item length {item_length} does not fit the PDU")
        pdvs.append([body[offset + 4], body[offset + 5 : offset + 4 + item_length]])
        offset += 4 + item_length
    return pdvs


#: PDU type of A-ABORT (PS3.8 9.3.8).
A_ABORT_TYPE = 0x07
#: The reasons an A-ABORT from the service provider (source 2) may give (PS3.8 9.3.8).
PROVIDER_REASONS = (0, 1, 2, 4, 5, 6)


def check_abort(body: bytes | bytearray) -> None:
    """Check the source and reason of an A-ABORT PDU's body (PS3.8 9.3.8, Table 9-26).

    Raises
    ------
    ValueError
        For a source other than 0, 1 or 2, or a reason a provider cannot give.
    """
    if len(body) < 4:
        return  # pynetdicom's decoder says what is missing
    source, reason = body[2], body[3]
    if source not in (0, 1, 2) or (source == 2 and reason not in PROVIDER_REASONS):
        raise ValueError(f"A-ABORT with source {source} and reason {reason} (PS3.8 9.3.8)")


class _StateMachine(StateMachine):
    """pynetdicom 3.0's upper layer state machine (PS3.8 9.2), failing without a traceback.

    An action fails on what the peer sent (an A-ABORT PDU with an invalid source, a
    command set that does not decode); pynetdicom's ``do_action`` then logs it twice,
    the second time with a traceback, and raises. This one raises only: the reactor
    logs the reason in one line and aborts the association (CWE-117).
    """

    def do_action(self, event: str) -> None:
        """Run the action of ``event`` in the current state and move to the next state."""
        if (event, self.current_state) not in TRANSITION_TABLE:
            raise InvalidEventError(f"event {event} is not valid in state {self.current_state}")
        action = TRANSITION_TABLE[(event, self.current_state)]
        try:
            next_state = ACTIONS[action][1](self.dul)
            evt.trigger(
                self.dul.assoc,
                evt.EVT_FSM_TRANSITION,
                {
                    "action": action,
                    "current_state": self.current_state,
                    "fsm_event": event,
                    "next_state": next_state,
                },
            )
            self.transition(next_state)
        except Exception:
            self.dul.kill_dul()
            raise


class EventDrivenDUL(DULServiceProvider):
    """The DICOM Upper Layer provider, waiting in ``select`` instead of sleeping."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self.state_machine = _StateMachine(self)
        # a socket pair, not a pipe: a wake-up after close raises instead of writing to
        # whatever file reuses the descriptor
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.to_provider_queue = _NotifyingQueue(self.wake)
        self.to_user_queue = _NotifyingQueue(self._notify_user)
        #: Largest command set or data set received into memory (PS3.7 9.3.1, E.1).
        self.max_message_bytes = MAX_MESSAGE_BYTES
        self._message_bytes = 0  # of the command or data set being received

    def wake(self) -> None:
        """Make the reactor look at its queues now."""
        with contextlib.suppress(OSError):  # buffer full (a wake-up is pending) or closed
            self._wake_w.send(b"\0")

    def _notify_user(self) -> None:
        work = getattr(self.assoc, "_work", None)
        if work is not None:
            work.set()

    def _read_pdu_data(self) -> None:
        """Read one PDU and queue its event, as pynetdicom does (PS3.8 9.2, Table 9-10).

        Where pynetdicom's reader differs:

        * a PDU longer than :func:`pdu_limit` raises :class:`PduTooLong` before its body
          is read, and the reactor aborts the association;
        * a P-DATA-TF PDU's fragments stay views of its buffer (unless handlers watch
          the PDUs, as pynetdicom's logging ones do when its logger is at INFO);
        * a PDU that cannot be decoded is logged as one line with the reason, where
          pynetdicom logs it twice and with a traceback (CWE-117: the reason may quote
          the peer's bytes, which the log's formatter escapes). Events as pynetdicom's:
          Evt17 for a connection closed within a PDU, Evt19 for a PDU of unknown type
          or one that cannot be decoded.
        """
        wrapped = self.socket
        if wrapped is None or wrapped.socket is None:
            return super()._read_pdu_data()
        try:
            pdu = self._read_pdu(wrapped)
        except OSError:
            log.error("connection closed before the entire PDU was received")
            pdu = None
        if pdu is None:
            self.event_queue.put("Evt17")
        elif pdu[0][0] not in PDU_NAMES:  # its body is not read, as pynetdicom does
            log.error("received a PDU of unknown type 0x%02X (PS3.8 9.3.1)", pdu[0][0])
            self.event_queue.put("Evt19")
        elif pdu[0][0] == P_DATA_TF_TYPE and not self._watched():
            self._queue_pdvs(pdu[1])
        else:
            self._decode(*pdu)
        return None

    def _read_pdu(self, wrapped: AssociationSocket) -> tuple[bytes, bytearray] | None:
        """The header and body of the next PDU; None when the peer closed within it.

        The body of a PDU of unknown type is not read (empty).

        Raises
        ------
        PduTooLong
            When the header claims more than :func:`pdu_limit`.
        PduTimeout, OSError
            From the socket.
        """
        head = bytes(wrapped.recv(6))
        if len(head) < 6:
            return None
        length = int.from_bytes(head[2:6], "big")
        limit = pdu_limit(head[0], self.assoc.ae.maximum_pdu_size)
        if length > limit:  # the reactor aborts the association: nothing more is read
            raise PduTooLong(f"PDU type 0x{head[0]:02X} of {length} bytes (at most {limit})")
        if head[0] not in PDU_NAMES:
            return head, bytearray()
        body = wrapped.recv(length)
        if len(body) != length:
            log.error("PDU shorter than its length (%d of %d bytes)", len(body), length)
            return None
        return head, body

    def _watched(self) -> bool:
        """Whether handlers watch the PDUs or the raw data (they need pynetdicom's PDUs)."""
        assoc = self.assoc
        return bool(assoc.get_handlers(evt.EVT_PDU_RECV) or assoc.get_handlers(evt.EVT_DATA_RECV))

    def _queue_pdvs(self, body: bytearray) -> None:
        """Queue a P-DATA-TF PDU as views of its buffer (Evt10), or Evt19 when malformed."""
        try:
            pdvs = split_pdvs(memoryview(body))
        except ValueError as exc:
            log.error("cannot decode a P-DATA-TF PDU: %s", exc)
            self.event_queue.put("Evt19")
            return
        self._count_fragments(pdvs)
        self.event_queue.put("Evt10")
        self._recv_pdu.put(cast(Any, _PData(pdvs)))  # DT-2 calls only to_primitive()

    def _decode(self, head: bytes, body: bytearray) -> None:
        """Decode a PDU with pynetdicom and queue it with its event; Evt19 when it fails.

        An A-ASSOCIATE-RQ's names (:func:`~.gate.check_names`) and an A-ABORT's source
        and reason (:func:`check_abort`) are checked first: pynetdicom logs such values
        before it fails on them (a byte outside ASCII in a name with a traceback). A
        P-DATA-TF PDU counts toward the bound on a message too.
        """
        name = PDU_NAMES[head[0]]
        try:
            if head[0] == A_ASSOCIATE_RQ_TYPE:
                check_names(head + body)
            elif head[0] == A_ABORT_TYPE:
                check_abort(body)
            pdu, event = self._decode_pdu(bytearray(head) + body)
        except Exception as exc:  # anything pynetdicom's decoders raise (PS3.8 9.3)
            log.error("cannot decode the %s PDU of %d bytes: %s", name, len(body) + 6, exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)
        if isinstance(pdu, P_DATA_TF):
            items = pdu.presentation_data_value_items
            self._count_fragments([[i.context_id, i.data] for i in items])

    def _count_fragments(self, pdvs: list[list[Any]]) -> None:
        """Add fragments to the size of the set being received; raise past the bound.

        A message control header with bit 1 set ends a command set or a data set
        (PS3.8 E.2), and the count starts again.

        Raises
        ------
        MessageTooLarge
            When the command set or data set grows past ``max_message_bytes``; the
            reactor then aborts the association (nothing of it was stored).
        """
        for _context_id, fragment in pdvs:
            self._message_bytes += len(fragment) - 1
            if self._message_bytes > self.max_message_bytes:
                raise MessageTooLarge(
                    f"a command or data set of more than {self.max_message_bytes} bytes"
                )
            if fragment[0] & 0x02:
                self._message_bytes = 0

    def _wait(self, timeout: float) -> None:
        """Block until data arrives, a primitive is queued, or ``timeout`` passes."""
        waitables: list[socket.socket] = [self._wake_r]
        wrapped = self.socket
        raw = wrapped.socket if wrapped is not None else None
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return  # decrypted bytes wait in the TLS layer: select would not see them
        if wrapped is not None and wrapped.socket is not None and wrapped._is_connected:
            waitables.append(wrapped.socket)
        try:
            ready, _, _ = select.select(waitables, [], [], timeout)
        except (OSError, ValueError):  # socket closed meanwhile: the loop notices
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)

    def kill_dul(self) -> None:
        """Stop the reactor (and wake it so it stops now)."""
        self._kill_thread = True
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if the state machine is idle (Sta1); as pynetdicom's."""
        if self.state_machine.current_state == "Sta1":
            self.kill_dul()
            while self.is_alive():
                time.sleep(0.001)
            return True
        return False

    def run_reactor(self) -> None:
        """pynetdicom 3.0's DUL loop with ``select`` as the idle wait."""
        try:
            self._reactor()
        finally:
            self._notify_user()  # the association reactor checks is_alive()
            self._wake_r.close()
            self._wake_w.close()

    def _reactor(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait(TIMER_CHECK_S)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # either encode and send a primitive, or receive and decode a PDU
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # as pynetdicom: any error aborts the association
                self._abort_after(exc)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            try:
                self.state_machine.do_action(event)
            except Exception as exc:  # a PDU or message pynetdicom cannot decode
                self._abort_after(exc)
                return
            idle = False

    def _abort_after(self, exc: Exception) -> None:
        """Send an A-ABORT bypassing the state machine (pynetdicom's handling), then close.

        pynetdicom leaves the connection open here; nothing else would close it.
        """
        log.error("exception in the DUL reactor, aborting the association: %s", exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.send(abort_pdu.encode())
            self.socket.close()
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class EventDrivenAssociation(Association):
    """An acceptor association whose reactor waits for work instead of sleeping 1 ms."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._work = threading.Event()
        self.dul = EventDrivenDUL(self)
        self.dimse = StoreResponseDIMSE(self)
        self.dimse.msg_queue = _Requests(self)

        # the timeouts live in the DUL's timers: set them again on the new DUL
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        #: A request is being served (in the DUL thread for C-STORE): the association
        #: is not idle, whatever the timer says; the peer waits for us.
        self._serving = False

    def kill(self) -> None:
        """Stop the association thread (and wake it)."""
        self._work.set()
        super().kill()

    def _abort_blocking(self, block: bool = True) -> None:
        """Abort; never waits for the DUL thread when called from it (a C-STORE served there)."""
        super()._abort_blocking(block and threading.current_thread() is not self.dul)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """Serve a DIMSE request as pynetdicom does, answering what it mishandles.

        The node is a Verification and Storage SCP only (PS3.4 A, B). pynetdicom
        ignores a request that lacks a required field (the peer then waits for an
        answer until a timeout) and picks the service from the message's SOP Class UID
        (it answers a C-FIND on the Verification context with a C-ECHO response).
        Here, on an accepted presentation context:

        * a request without a Message ID cannot be answered: A-ABORT;
        * a request other than C-ECHO and C-STORE gets its own response with status
          ``0x0211`` Unrecognized Operation (PS3.7 Annex C);
        * a C-STORE request lacking a required field (PS3.7 9.3.1.1) gets
          ``0xC000`` Cannot Understand (PS3.4 B.2.3); a C-ECHO request lacking one is
          aborted.

        Responses, requests during release and unknown contexts go to pynetdicom (it
        ignores the first two and aborts the last).
        """
        self._serving = True
        try:
            self._serve(msg, context_id)
        finally:
            # the network timeout counts the peer's silence from our answer on, not the
            # time the node took to answer (a locked index may take longer than it)
            cast(EventDrivenDUL, self.dul)._idle_timer.restart()
            self._serving = False

    def _serve(self, msg: Any, context_id: int) -> None:
        if not self._mishandled(msg, context_id):
            super()._serve_request(msg, context_id)
            return
        if msg.MessageID is None or type(msg) is C_ECHO:
            log.warning("aborted: a %s request the node cannot answer", type(msg).__name__)
            self.abort()
            return
        answer = CANNOT_UNDERSTAND if type(msg) is C_STORE else UNRECOGNIZED_OPERATION
        log.warning("answered 0x%04X to a %s request", answer, type(msg).__name__)
        response = type(msg)()
        response.MessageIDBeingRespondedTo = msg.MessageID
        response.Status = answer
        self.dimse.send_msg(response, context_id)

    def _mishandled(self, msg: Any, context_id: int) -> bool:
        """Whether ``msg`` is a request on an accepted context that pynetdicom mishandles."""
        if type(msg) in _SERVED and msg.is_valid_request:
            return False
        return (
            not self._sent_release
            and context_id in self._accepted_cx
            and getattr(msg, "MessageIDBeingRespondedTo", None) is None  # not a response
        )

    def _run_reactor(self) -> None:
        """pynetdicom 3.0's acceptor loop; waits on ``_work`` between messages."""
        self._is_paused = False
        busy = False
        while not self._kill:
            # paused while waiting: a service started from a handler need not wait for us
            self._is_paused = True
            if not busy:
                self._work.wait(TIMER_CHECK_S)
                self._work.clear()  # then look: a message put after this sets it again
            busy = False
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                busy = True
            if self._finished():
                return

    def _finished(self) -> bool:
        """Release, abort, DUL stopped or network timeout: the checks of pynetdicom's loop."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            log.info("association released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            log.info("association aborted")
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if not self._serving and self.dul.idle_timer_expired():
            log.error("network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


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

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection (never wrapped here; see the class description)."""
        client, address = cast(socket.socket, self.socket).accept()
        return client, address


class _RequestHandler(RequestHandler):
    """Makes an :class:`EventDrivenAssociation` per connection, TCP_NODELAY on."""

    _request: bytes = b""

    def handle(self) -> None:
        """Wait in the gate for the A-ASSOCIATE-RQ, then make the association (or not)."""
        sock = cast(socket.socket, self.request)
        # Nagle's algorithm would hold each small response ~40 ms behind a delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = cast(_Server, self.server)
        limits, gate = server.limits, server.gate
        if not gate.enter():
            log.warning("closed a connection: %d already wait for an association", gate.limit)
            return self._close(sock)
        try:
            if server.tls is not None:
                secured = self._handshake(sock, server, limits.request_timeout_s)
                if secured is None:
                    return None
                self.request = sock = secured
            request = read_association_request(sock, limits.request_timeout_s)
        except InvalidRequest as exc:
            log.warning("aborted a connection before its association: %s", exc)
            return self._close(sock, abort_pdu())
        finally:
            gate.leave()
        if request is None:  # closed, or too slow
            return self._close(sock)
        refusal = self._refusal(limits, request)
        if refusal is not None:
            return self._close(sock, refusal)
        self._request = request
        super().handle()
        return None

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
            return rejection_pdu(*UNKNOWN_CALLER)
        if self.ae.require_called_aet and not called_matches(
            limits, request, self.server.ae_title, address
        ):
            log.warning(
                "association rejected: called AE title %r from %s is not ours",
                called_ae_title(request),
                address,
            )
            return rejection_pdu(*WRONG_CALLED)
        refused = limits.users.refusal(request, address) if limits.users else None
        if refused is not None:
            log.warning("association rejected: user identity from %s refused: %s", address, refused)
            return rejection_pdu(*USER_REFUSED)
        try:
            check_names(request)
        except InvalidRequest as exc:
            log.warning("aborted a connection before its association: %s", exc)
            return abort_pdu()
        if self._congested(limits):
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
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        wrapped = _Socket(assoc, client_socket=self.request)
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
) -> ThreadedAssociationServer:
    """Start a non-blocking association server for ``ae``, as ``AE.start_server`` does.

    With a validated pynetdicom version the associations use the event-driven reactors,
    behind the gate (:mod:`.gate`) and within ``limits``; otherwise pynetdicom's own
    server is started (with only its own limits) and a warning logged. With ``tls``
    every connection must complete a TLS handshake first (PS3.15 B.9).
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
