"""Web: the gauges read from the index when Prometheus scrapes (queues and outboxes).

Queue depth and the oldest waiting job's age per model, and deliveries pending and failed
per destination, are counted in the index at scrape time, so they are right whichever
process (or restart) changed them. Labels are model names and configured destinations:
bounded by the configuration, never a UID.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store.overview import StatusSummary

__all__ = ["INDEX_GAUGES", "IndexCollector"]

log = logging.getLogger(__name__)

PREFIX = "dicom_ai_node_"

#: The gauges read from the index: name (after the prefix), help text, labels.
INDEX_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "queue_depth": ("Jobs queued per model.", ("model",)),
    "jobs_running": ("Jobs running per model.", ("model",)),
    "queue_oldest_age_seconds": (
        "Age of the oldest queued job per model (0 when none waits).",
        ("model",),
    ),
    "deliveries_pending": ("Deliveries waiting to be sent per destination.", ("destination",)),
    "deliveries_failed": (
        "Deliveries whose retry window ended without success, per destination.",
        ("destination",),
    ),
    "series_receiving": ("Series still receiving instances.", ()),
}


class IndexCollector(Collector):
    """Prometheus collector of the index's queues (read on each scrape)."""

    def __init__(self, read: Callable[[], StatusSummary]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The queue and outbox gauges; none when the index does not answer."""
        families = {
            name: GaugeMetricFamily(PREFIX + name, text, labels=list(labels))
            for name, (text, labels) in INDEX_GAUGES.items()
        }
        try:
            summary = self.read()
        except Exception as exc:  # a scrape answers without these rather than fail
            log.warning("metrics: the index did not answer: %s", type(exc).__name__)
            return
        for m in summary.models:
            families["queue_depth"].add_metric([m.model_name], m.queued)
            families["jobs_running"].add_metric([m.model_name], m.running)
            families["queue_oldest_age_seconds"].add_metric(
                [m.model_name], m.oldest_queued_age_s or 0.0
            )
        for d in summary.outbox:
            families["deliveries_pending"].add_metric([d.destination], d.pending)
            families["deliveries_failed"].add_metric([d.destination], d.failed)
        families["series_receiving"].add_metric([], summary.series_receiving)
        yield from families.values()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """No description: the collector is read at scrape time only."""
        return iter(())
