"""Send: one sender thread per destination, so a dead destination holds only itself.

An attempt against a destination that hangs lasts up to the send timeout (connection,
association and DIMSE timeouts, PS3.8 9.1.5 and PS3.7 9.1.1); the destinations with
work due each get a thread of their own, so no other destination waits for it. At most
one attempt per destination runs at a time: the outbox rows of a destination are never
sent twice concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["DELIVER_INTERVAL_S", "DestinationSenders"]

logger = logging.getLogger(__name__)

DELIVER_INTERVAL_S = 1.0
"""How often the node looks for due deliveries. A destination that comes back gets its
held results at most ``send.retry_max_s`` + this + one attempt after its last failed
attempt (see ``docs/reliability.md``)."""


class DestinationSenders:
    """Runs ``send(destination)`` in a thread per destination, one at a time for each.

    The number of threads is bounded by the number of distinct destinations with due
    work, which the configuration bounds (the AE table and ``send.destinations``).

    Parameters
    ----------
    send:
        Sends what is due for one destination (``Deliverer.deliver``); it records every
        outcome itself. An exception it raises is logged here, where it is finally
        handled, and the destination is tried again at the next :meth:`start_due`.
    """

    def __init__(self, send: Callable[[str], object]) -> None:
        self._send = send
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def _run(self, destination: str) -> None:
        try:
            self._send(destination)
        except Exception:
            logger.exception("delivery to %s stopped by an unexpected error", destination)

    def start_due(self, destinations: Iterable[str]) -> list[str]:
        """Start a sender for each destination that has none running.

        Parameters
        ----------
        destinations:
            Destinations (``AE@HOST:PORT``) with deliveries due now.

        Returns
        -------
        list[str]
            The destinations a sender was started for.
        """
        started: list[str] = []
        with self._lock:
            for dest in destinations:
                running = self._threads.get(dest)
                if running is not None and running.is_alive():
                    continue  # still busy, e.g. waiting out a timeout: it alone waits
                thread = threading.Thread(
                    target=self._run, args=(dest,), name=f"send {dest}", daemon=True
                )
                thread.start()
                self._threads[dest] = thread
                started.append(dest)
            for dest in [d for d, t in self._threads.items() if not t.is_alive()]:
                if dest not in started:
                    del self._threads[dest]
        return started

    def busy(self) -> list[str]:
        """Destinations whose sender is running now."""
        with self._lock:
            return sorted(d for d, t in self._threads.items() if t.is_alive())

    def join(self, timeout_s: float) -> list[str]:
        """Wait (bounded) for the running senders; returns those still running after it."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = self.busy()
        if left:
            logger.warning("senders still running at stop: %s", ", ".join(left))
        return left
