"""Infer: the heartbeat of a running job, which keeps its lease while the model works.

A worker claims a job with a lease (``job.lease_until``); the lease is what lets another
worker take over the job of a worker that died or froze. A job may run for minutes
(a large series on CPU), so its worker renews the lease every :data:`JOB_HEARTBEAT_S`
from a thread of its own; only a worker that stops renewing loses the job. The SQL is
the caller's (``store.jobs.renew_lease``): this module only keeps time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["JOB_HEARTBEAT_S", "JOB_LEASE_S", "LeaseKeeper"]

log = logging.getLogger(__name__)

#: How long a claimed job stays its worker's without a heartbeat. A worker that dies or
#: freezes loses it this long after its last renewal (a restart re-queues at once).
JOB_LEASE_S = 60.0
#: How often a worker renews the lease of the job it runs.
JOB_HEARTBEAT_S = 15.0


class LeaseKeeper:
    """The heartbeat of one running job: renews its lease until the job is recorded.

    Parameters
    ----------
    renew:
        Renews the lease once; returns ``False`` when the job is no longer ours
        (:func:`~dicom_ai_node.store.jobs.renew_lease`).
    interval_s:
        Seconds between renewals (well below the lease).
    name:
        For the thread name and the log.
    """

    def __init__(self, renew: Callable[[], bool], interval_s: float, name: str) -> None:
        self._renew = renew
        self._interval_s = interval_s
        self._name = name
        self._lock = threading.Lock()  # a renewal never overlaps the final write
        self._stop = threading.Event()
        self._finished = False
        self.lost = False
        self._thread = threading.Thread(target=self._run, name=f"lease {name}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(self._interval_s + 5.0)

    def finish(self, record: Callable[[], bool]) -> bool:
        """Run the job's final write (complete or fail) with no renewal after it."""
        with self._lock:
            self._finished = True
            return record()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):  # ends with the job
            with self._lock:
                if self._finished:
                    return
                try:
                    held = self._renew()
                except Exception as exc:  # the database may come back before the lease ends
                    log.warning("%s: lease not renewed: %s", self._name, type(exc).__name__)
                    continue
            if not held:
                self.lost = True
                log.warning("%s: lease lost; another worker or a restart took the job", self._name)
                return
