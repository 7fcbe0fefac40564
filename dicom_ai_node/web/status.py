"""Web: the status summary, read from the index at most once a second for all readers.

The status screen of every open browser, ``/api/v1/status`` and each Prometheus scrape
want the same counts; reading them costs the index a few scans (about 20 ms on 100,000
jobs), and a burst of readers would otherwise repeat them side by side with ingest. One
summary serves every reader for :data:`STATUS_TTL_S`; the one reader that finds it old
reads it again while the others wait for that read.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from ..store.db import Sessions
from ..store.overview import StatusSummary, status_summary

__all__ = ["STATUS_TTL_S", "StatusCache", "status_of"]

#: Seconds one summary serves.
STATUS_TTL_S = 1.0


class StatusCache:
    """The index's status summary, read again when older than ``ttl_s``.

    Parameters
    ----------
    sessions:
        The index.
    clock:
        Current UTC time (what "oldest waiting" is measured against).
    ttl_s:
        Seconds one summary serves.
    """

    def __init__(
        self, sessions: Sessions, clock: Callable[[], dt.datetime], ttl_s: float = STATUS_TTL_S
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._summary: StatusSummary | None = None
        self._read_at = 0.0

    def get(self) -> StatusSummary:
        """The summary, at most ``ttl_s`` old."""
        with self._lock:
            now = time.monotonic()
            if self._summary is None or now - self._read_at >= self.ttl_s:
                self._summary = status_summary(self.sessions, self.clock())
                self._read_at = now
            return self._summary


def status_of(request: Any) -> StatusSummary:
    """The summary of the application serving ``request`` (its :class:`StatusCache`)."""
    cache = request.app.state.status
    assert isinstance(cache, StatusCache)
    return cache.get()
