"""Receive: the association reactor, waiting on an event and serving each C-STORE at once.

pynetdicom 3.0's association thread sleeps 1 ms before each look at the incoming DIMSE
messages; this one blocks on an event set when a DIMSE message, an A-RELEASE or an
A-ABORT arrives, or when the DUL (:mod:`.dul`) stops. Once the association is
established, a C-STORE request is served in the DUL thread as soon as it is complete,
so that its response leaves from the thread that received it (no hand-off either way),
encoded directly (:mod:`.response`); a request pynetdicom mishandles is answered here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_STORE

from .dul import TIMER_CHECK_S, EventDrivenDUL, NotifyingQueue
from .response import StoreResponseDIMSE
from .status import CANNOT_UNDERSTAND, UNRECOGNIZED_OPERATION

__all__ = ["EventDrivenAssociation"]

log = logging.getLogger(__name__)

#: The DIMSE requests the node serves (PS3.4 A.4 Verification, B.2 Storage).
_SERVED = (C_ECHO, C_STORE)


class _Requests(NotifyingQueue):
    """The DIMSE message queue; C-STORE requests are served as they arrive instead.

    pynetdicom's DUL thread puts each complete message here for the association thread
    to serve. A C-STORE request is served right away in the DUL thread: the response is
    then sent by the same thread, without two thread hand-offs per instance. Other
    messages (C-ECHO, responses to requests the node made) are queued as before.
    Without asynchronous operations (not negotiated) the peer waits for each response,
    so the order of messages is kept.

    Until the association thread has established the association and entered its
    reactor, requests are queued for it: the A-ASSOCIATE-AC leaves before pynetdicom
    sets ``is_established`` and runs the EVT_ACCEPTED and EVT_ESTABLISHED handlers, a
    peer may send its first request at once (PS3.8 9.2, Sta6), and pynetdicom's
    Storage SCP sends no response on an association not established yet (the peer
    then waited for one until the network timeout).
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
            and self._assoc._reacting
            and self.empty()
        ):
            self._assoc._serve_request(primitive, context_id)
            return
        super().put(item, block, timeout)


class EventDrivenAssociation(Association):
    """An acceptor association whose reactor waits for work instead of sleeping 1 ms."""

    #: Told once when the association's thread ends, however it ended (:mod:`.watch`).
    on_end: Callable[[Association], None] | None = None

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
        #: The association thread is in :meth:`_run_reactor`: established, its
        #: EVT_ACCEPTED and EVT_ESTABLISHED handlers done; the DUL may serve C-STOREs.
        self._reacting = False

    def run_reactor(self) -> None:
        """pynetdicom's reactor (negotiation, then :meth:`_run_reactor`); then ``on_end``."""
        try:
            super().run_reactor()
        finally:
            if self.on_end is not None:
                self.on_end(self)

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
        self._reacting = True
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
