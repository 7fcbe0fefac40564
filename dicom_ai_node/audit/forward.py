"""Audit: the background forwarder to the syslog collector, with a durable spool.

Callers never wait for the network: :meth:`SyslogForwarder.submit` puts the message on a
bounded queue, or, when the queue is full, into the spool on disk. One thread sends
what is queued; while the collector cannot be reached it moves messages to the spool
and tries again after a backoff (doubling up to ``retry_max_s``); once the collector
answers, the spool is sent first, oldest first, so the order is kept (except under
overload: messages past a full queue reach the spool before those still queued; each
carries its own EventDateTime).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time

from .spool import Spool
from .syslog import MessageTooLarge, Transport

__all__ = ["SyslogForwarder"]

log = logging.getLogger(__name__)

#: Longest the thread waits before it looks at its stop flag and the spool again.
IDLE_S = 0.5
#: Spooled messages sent per pass before queued ones are looked at again.
DRAIN_BATCH = 100


class SyslogForwarder:
    """Sends syslog messages from a bounded queue in one thread; spools while down.

    Parameters
    ----------
    transport:
        UDP or TLS (:mod:`.syslog`).
    spool:
        Where messages wait while the collector cannot be reached.
    queue_size:
        Messages held in memory; beyond it they go straight to the spool.
    retry_initial_s, retry_max_s:
        Backoff after a failed send: the first delay, doubled up to the cap.
    """

    def __init__(
        self,
        transport: Transport,
        spool: Spool,
        *,
        queue_size: int = 1000,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delay = 0.0  # current backoff; 0 while the collector answers
        self._retry_at = 0.0  # monotonic time of the next try while backing off
        self.sent = 0
        self.dropped = 0

    # -- callers --------------------------------------------------------------------------
    def submit(self, message: bytes) -> None:
        """Queue ``message`` for sending; never blocks on the network."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._keep(message)

    def start(self) -> None:
        """Start the sending thread (at most one)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued while the collector answers (``timeout_s``); spool the rest."""
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + timeout_s
        if thread is not None:
            self._stop.set()
            self._wake()
            thread.join(timeout_s)
        stuck = thread is not None and thread.is_alive()  # in a send: only spool from here
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message is not None:
                if stuck or self._delay or time.monotonic() > deadline:
                    self._keep(message)
                else:
                    self._send_or_keep(message)
        self.transport.close()

    # -- the thread -----------------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(queue.Full):  # else the thread is busy and looks soon
            self._queue.put_nowait(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            if len(self.spool) and time.monotonic() >= self._retry_at:
                self._drain()
            wait = IDLE_S
            if self._delay:
                wait = min(IDLE_S, max(0.0, self._retry_at - time.monotonic()))
            try:
                message = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if message is None:
                continue
            if self._delay or len(self.spool):
                self._keep(message)  # keep the order: what waits in the spool goes first
            else:
                self._send_or_keep(message)

    def _send(self, message: bytes) -> bool:
        """One send; False (and backing off) when the collector cannot be reached."""
        try:
            self.transport.send(message)
        except MessageTooLarge as exc:
            self.dropped += 1
            log.error("audit message not forwarded (kept in the local audit log): %s", exc)
            return True
        except OSError as exc:
            if not self._delay:
                log.warning("audit collector unreachable, spooling audit messages: %s", exc)
            self._delay = min(self.retry_max_s, max(self.retry_initial_s, self._delay * 2))
            self._retry_at = time.monotonic() + self._delay
            return False
        if self._delay:
            log.info("audit collector reachable again")
        self._delay, self._retry_at = 0.0, 0.0
        self.sent += 1
        return True

    def _send_or_keep(self, message: bytes) -> None:
        if not self._send(message):
            self._keep(message)

    def _keep(self, message: bytes) -> None:
        try:
            kept = self.spool.put(message)
        except OSError as exc:
            log.error("cannot spool an audit message (kept in the local audit log): %s", exc)
            kept = False
        if not kept:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "audit spool full (%d bytes): %d message(s) kept only in the local log",
                    self.spool.max_bytes,
                    self.dropped,
                )

    def _drain(self) -> None:
        """Send spooled messages, oldest first, until the spool is empty or a send fails."""
        for _ in range(1 + len(self.spool) // DRAIN_BATCH):
            batch = self.spool.oldest(DRAIN_BATCH)
            for path in batch:
                if self._stop.is_set():
                    return
                try:
                    message = path.read_bytes()
                except OSError as exc:
                    log.error("cannot read spooled audit message %s: %s", path.name, exc)
                    self.spool.remove(path)
                    continue
                if not self._send(message):
                    return
                self.spool.remove(path)
            if not batch:
                return
