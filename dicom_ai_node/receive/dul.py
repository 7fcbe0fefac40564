"""Receive: the DICOM Upper Layer reactor, waiting in ``select`` and decoding each PDU itself.

pynetdicom 3.0's DUL thread sleeps between checks of its socket and of its outgoing
queue; this one blocks in ``select`` on its socket and a wake-up socket written whenever
a primitive is queued for sending (PS3.8 9.2). It keeps pynetdicom's state machine and
checks in the same order; only the waiting changes, and each PDU is read by
:mod:`.transport` and checked by :mod:`.pdu` before pynetdicom decodes it.

A PDU or message pynetdicom cannot decode, or a state machine action that fails on
what the peer sent, is logged in one line with the reason and ends the association as
in pynetdicom; pynetdicom logs these twice, with a traceback (CWE-117: the reason may
quote the peer's bytes, which the log's formatter escapes, :mod:`dicom_ai_node.log`).
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
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import ACTIONS, TRANSITION_TABLE, InvalidEventError, StateMachine
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.transport import AssociationSocket

from .gate import (
    A_ASSOCIATE_RQ_TYPE,
    MAX_MESSAGE_BYTES,
    check_names,
)
from .pdu import (
    A_ABORT_TYPE,
    P_DATA_TF_TYPE,
    PDU_NAMES,
    PData,
    PduTooLong,
    check_abort,
    pdu_limit,
    split_pdvs,
)

__all__ = ["TIMER_CHECK_S", "EventDrivenDUL", "MessageTooLarge", "NotifyingQueue"]

log = logging.getLogger(__name__)

#: Longest wait before the loops look at their timers (ARTIM, network idle timeout).
TIMER_CHECK_S = 0.05


class NotifyingQueue(queue.Queue[Any]):
    """A queue that calls ``notify`` after every ``put``."""

    def __init__(self, notify: Any) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class MessageTooLarge(ValueError):
    """A DIMSE command or data set larger than the node holds: the association is aborted."""


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
            if next_state == "Sta1":  # the connection ended (PS3.8 Table 9-10)
                cast("EventDrivenDUL", self.dul).connection_ended.set()
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
        self.to_provider_queue = NotifyingQueue(self.wake)
        self.to_user_queue = NotifyingQueue(self._notify_user)
        #: Largest command set or data set received into memory (PS3.7 9.3.1, E.1).
        self.max_message_bytes = MAX_MESSAGE_BYTES
        self._message_bytes = 0  # of the command or data set being received
        #: Set when the state machine is back in Sta1: nothing more will reach the user.
        self.connection_ended = threading.Event()

    def wake(self) -> None:
        """Make the reactor look at its queues now."""
        with contextlib.suppress(OSError):  # buffer full (a wake-up is pending) or closed
            self._wake_w.send(b"\0")

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """The next primitive for the user, as pynetdicom's; a wait ends with the connection.

        The association thread waits up to the ACSE timeout for the A-ASSOCIATE request.
        When the provider itself rejects the request (an unsupported protocol version,
        PS3.8 9.2 AE-6) the user is never told, and pynetdicom's thread would hold its
        place among the active associations for the whole timeout after the peer left.
        Here the wait also ends once the state machine is back in Sta1.
        """
        if not wait or self.connection_ended.is_set():
            return super().receive_pdu(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_s = TIMER_CHECK_S
            if deadline is not None:
                slice_s = min(slice_s, max(deadline - time.monotonic(), 0.0))
            primitive = super().receive_pdu(wait=True, timeout=slice_s)
            if primitive is not None or self.connection_ended.is_set():
                return primitive
            if deadline is not None and time.monotonic() >= deadline:
                return None

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
        self._recv_pdu.put(cast(Any, PData(pdvs)))  # DT-2 calls only to_primitive()

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
