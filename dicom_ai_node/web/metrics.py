"""Web: the gauges read from the index when Prometheus scrapes (queues and outboxes).

Queue depth and the oldest waiting job's age per model, and deliveries pending and failed
per destination, are counted in the index at scrape time, so they are right whichever
process (or restart) changed them. Labels are model names and configured destinations:
bounded by the configuration, never a UID.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store.db import Sessions
from ..store.overview import status_summary

__all__ = ["IndexCollector"]

log = logging.getLogger(__name__)

PREFIX = "dicom_ai_node_"


class IndexCollector(Collector):
    """Prometheus collector of the index's queues (read on each scrape)."""

    def __init__(self, sessions: Sessions, clock: Callable[[], dt.datetime]) -> None:
        self.sessions = sessions
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The queue and outbox gauges; none when the index does not answer."""
        depth = GaugeMetricFamily(
            PREFIX + "queue_depth", "Jobs queued per model.", labels=["model"]
        )
        running = GaugeMetricFamily(
            PREFIX + "jobs_running", "Jobs running per model.", labels=["model"]
        )
        oldest = GaugeMetricFamily(
            PREFIX + "queue_oldest_age_seconds",
            "Age of the oldest queued job per model (0 when none waits).",
            labels=["model"],
        )
        pending = GaugeMetricFamily(
            PREFIX + "deliveries_pending",
            "Deliveries waiting to be sent per destination.",
            labels=["destination"],
        )
        failed = GaugeMetricFamily(
            PREFIX + "deliveries_failed",
            "Deliveries whose retry window ended without success, per destination.",
            labels=["destination"],
        )
        receiving = GaugeMetricFamily(
            PREFIX + "series_receiving", "Series still receiving instances."
        )
        try:
            summary = status_summary(self.sessions, self.clock())
        except Exception as exc:  # a scrape answers without these rather than fail
            log.warning("metrics: the index did not answer: %s", type(exc).__name__)
            return
        for m in summary.models:
            depth.add_metric([m.model_name], m.queued)
            running.add_metric([m.model_name], m.running)
            oldest.add_metric([m.model_name], m.oldest_queued_age_s or 0.0)
        for d in summary.outbox:
            pending.add_metric([d.destination], d.pending)
            failed.add_metric([d.destination], d.failed)
        receiving.add_metric([], summary.series_receiving)
        yield from (depth, running, oldest, pending, failed, receiving)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """No description: the collector is read at scrape time only."""
        return iter(())
