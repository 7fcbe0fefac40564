"""Core: the node's Prometheus metrics (counters, histograms and live gauges on one registry).

One :class:`NodeMetrics` per node, made by the composition root and handed to each stage,
which calls its methods as work happens. Its metrics live on a registry of their own,
never prometheus_client's global one, so that many nodes can run in one process (the
tests do). Names follow Prometheus' conventions: a ``dicom_ai_node_`` prefix, base
units (seconds, bytes) in the name, ``_total`` for counters.

Every label has a bounded set of values: outcomes and triggers are fixed here (a value
outside them raises :class:`ValueError`); ``model`` takes the installed models' names and
``destination`` the configured ``AE@HOST:PORT`` destinations. No label ever holds a UID,
a patient value or an AE title a caller chose.

The gauges read from the index at scrape time (queue depth, oldest queued job, pending
deliveries) are not here: the web stage collects them when it is scraped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import __version__
from .domain import AssociationOutcome

__all__ = [
    "DELIVERY_OUTCOMES",
    "INSTANCE_OUTCOMES",
    "JOB_OUTCOMES",
    "SERIES_TRIGGERS",
    "STAGES",
    "STUDY_TRIGGERS",
    "NodeMetrics",
    "series_trigger",
    "study_trigger",
]

PREFIX = "dicom_ai_node"

#: What became of one C-STORE: stored (new), a duplicate of stored bytes, or refused.
INSTANCE_OUTCOMES = ("stored", "duplicate", "refused")
#: What completed a series (from the reason the index or the sweep recorded).
SERIES_TRIGGERS = ("quiet", "expected_count", "forced", "other")
#: What completed a study (from the assembler's reason).
STUDY_TRIGGERS = ("quiet", "expected_series", "expected_instances", "forced", "other")
#: How a worker's run of a job ended; ``not_recorded``: its claim was lost meanwhile
#: (lease expired, re-queued or cancelled), so another run or the operator decides.
JOB_OUTCOMES = ("done", "quality_failed", "failed", "not_recorded")
#: One delivery row after one attempt: delivered, due again later, or failed for good.
DELIVERY_OUTCOMES = ("delivered", "retry", "failed")
#: The steps of a study's way through the node, each timed per model: the wait from the
#: last instance to the job (completeness), the job's wait in the queue, reading its
#: input, the model, building and writing the results, and from results to delivered.
STAGES = ("wait_complete", "queue_wait", "load", "infer", "encode", "deliver")

#: C-STORE handling: from the request's data set in memory to the answer.
CSTORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Stages last from milliseconds (encode) to minutes (a quiet period, a queue).
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
#: Last image to results at the destination: seconds when idle, minutes under load.
END_TO_END_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: One association to a destination, all of its due results.
ATTEMPT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _checked(value: str, allowed: tuple[str, ...], what: str) -> str:
    """``value`` when it is one of ``allowed`` (bounded labels), else ValueError."""
    if value not in allowed:
        raise ValueError(f"{value!r} is not a {what}; allowed: {', '.join(allowed)}")
    return value


def series_trigger(reason: str) -> str:
    """The trigger label of a series completion reason (:mod:`~.assemble.policy`, index)."""
    if reason.startswith("expected instance count"):
        return "expected_count"
    if reason.startswith("quiet"):
        return "quiet"
    if reason.startswith("forced"):
        return "forced"
    return "other"


def study_trigger(reason: str) -> str:
    """The trigger label of a study completion reason (:mod:`~.assemble.policy`)."""
    if reason.startswith("expected series count"):
        return "expected_series"
    if reason.startswith("expected instance count"):
        return "expected_instances"
    if reason.startswith("study quiet"):
        return "quiet"
    if reason.startswith("forced"):
        return "forced"
    return "other"


class NodeMetrics:
    """The node's metrics on a registry of their own (see the module docstring).

    Parameters
    ----------
    version:
        The node's version, shown by ``dicom_ai_node_build_info``.
    process:
        Whether to add prometheus_client's process, platform and garbage collector
        metrics (``process_*``, ``python_*``) to the registry.

    Attributes
    ----------
    registry:
        What a scrape reads (:meth:`exposition`, or the web stage's ``/metrics``).
    """

    def __init__(self, version: str = __version__, *, process: bool = True) -> None:
        self.registry = registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        Info(f"{PREFIX}_build", "The node's version (always 1).", registry=registry).info(
            {"version": version}
        )
        self._receive_metrics()
        self._pipeline_metrics()
        self._live_gauges()

    def _receive_metrics(self) -> None:
        registry = self.registry
        self.associations = Counter(
            f"{PREFIX}_associations",
            "Associations with the listener that ended, by outcome (refused: closed before "
            "an association request was accepted for consideration).",
            ["outcome"],
            registry=registry,
        )
        for outcome in AssociationOutcome:
            self.associations.labels(outcome.value)
        self.instances_received = Counter(
            f"{PREFIX}_instances_received",
            "C-STORE requests answered, by outcome: stored (new), duplicate (same bytes "
            "stored before, answered Success) or refused (any failure status).",
            ["outcome"],
            registry=registry,
        )
        for name in INSTANCE_OUTCOMES:
            self.instances_received.labels(name)
        self.received_bytes = Counter(
            f"{PREFIX}_received_bytes",
            "Bytes of C-STORE data sets received (as encoded on the wire), whatever the outcome.",
            registry=registry,
        )
        self.cstore_duration = Histogram(
            f"{PREFIX}_cstore_duration_seconds",
            "Time to handle one C-STORE request, from its data set to the answer "
            "(durable and indexed before Success).",
            buckets=CSTORE_BUCKETS,
            registry=registry,
        )
        self.last_instance_received = Gauge(
            f"{PREFIX}_last_instance_received_timestamp_seconds",
            "Unix time of the last C-STORE answered Success (0: none since the node started).",
            registry=registry,
        )
        self.series_completed = Counter(
            f"{PREFIX}_series_completed",
            "Series that became complete, by trigger (quiet period, expected instance "
            "count, forced by an operator).",
            ["trigger"],
            registry=registry,
        )
        for trigger in SERIES_TRIGGERS:
            self.series_completed.labels(trigger)
        self.studies_completed = Counter(
            f"{PREFIX}_studies_completed",
            "Studies whose study-level routing was decided, by trigger (quiet period, "
            "announced series or instance counts, forced by an operator).",
            ["trigger"],
            registry=registry,
        )
        for trigger in STUDY_TRIGGERS:
            self.studies_completed.labels(trigger)

    def _pipeline_metrics(self) -> None:
        registry = self.registry
        self.jobs = Counter(
            f"{PREFIX}_jobs",
            "Job runs that ended, by model and outcome.",
            ["model", "outcome"],
            registry=registry,
        )
        self.model_loads = Counter(
            f"{PREFIX}_model_loads",
            "Times a model's weights were loaded (once per model and process when all goes well).",
            ["model"],
            registry=registry,
        )
        self.stage_duration = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Duration of each stage of a study's way through the node, per model: "
            "wait_complete (last instance to job), queue_wait (job queued, or queued again "
            "by a retry, to claimed), load (read and check the input), infer (the model), "
            "encode (build and write the results), deliver (results made to delivered, per "
            "result and destination; not for an operator's re-send).",
            ["stage", "model"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.last_image_to_delivered = Histogram(
            f"{PREFIX}_last_image_to_delivered_seconds",
            "From the last instance of a job's series to one of its results accepted by a "
            "destination (one observation per result and destination).",
            ["model"],
            buckets=END_TO_END_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            f"{PREFIX}_deliveries",
            "Delivery attempts of one result to one destination, by outcome: delivered, "
            "retry (due again later) or failed (retry window over).",
            ["destination", "outcome"],
            registry=registry,
        )
        self.delivery_attempt_duration = Histogram(
            f"{PREFIX}_delivery_attempt_duration_seconds",
            "One association to a destination with its due results, connect to release.",
            ["destination"],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )

    def _live_gauges(self) -> None:
        registry = self.registry
        self.active_associations = Gauge(
            f"{PREFIX}_active_associations",
            "Associations the listener serves now.",
            registry=registry,
        )
        self.storage_free_bytes = Gauge(
            f"{PREFIX}_storage_free_bytes",
            "Free bytes on the storage root's file system.",
            registry=registry,
        )
        self.storage_reserve_bytes = Gauge(
            f"{PREFIX}_storage_reserve_bytes",
            "Free space below which instances are refused (storage.min_free_mb).",
            registry=registry,
        )
        self.models_installed = Gauge(
            f"{PREFIX}_models_installed",
            "Models the node routes to (installed and valid).",
            registry=registry,
        )
        self.models_loaded = Gauge(
            f"{PREFIX}_models_loaded",
            "Models whose weights are loaded now.",
            registry=registry,
        )
        self.models_unavailable = Gauge(
            f"{PREFIX}_models_unavailable",
            "Models installed but unable to run here (their package missing; never routed to).",
            registry=registry,
        )

    # -- label sets known from the configuration ---------------------------------------------
    # (counters only: a histogram's series appear with its first observation, so that
    # the scrape does not carry a dozen empty buckets per stage of every installed model)
    def add_models(self, names: Iterable[str]) -> None:
        """Create the counters of these models at zero, so a scrape shows them before use."""
        for model in names:
            for outcome in JOB_OUTCOMES:
                self.jobs.labels(model, outcome)
            self.model_loads.labels(model)

    def add_destinations(self, names: Iterable[str]) -> None:
        """Create the counters of these destinations (``AE@HOST:PORT``) at zero."""
        for destination in names:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(destination, outcome)

    # -- receive ---------------------------------------------------------------------------
    def association_ended(self, outcome: AssociationOutcome | str) -> None:
        """Count an association (or refused connection) that ended."""
        self.associations.labels(AssociationOutcome(outcome).value).inc()

    def instance_received(self, outcome: str) -> None:
        """Count one C-STORE answered (:data:`INSTANCE_OUTCOMES`); Success marks the time."""
        checked = _checked(outcome, INSTANCE_OUTCOMES, "C-STORE outcome")
        self.instances_received.labels(checked).inc()
        if outcome != "refused":
            self.last_instance_received.set(time.time())

    def cstore_handled(self, seconds: float) -> None:
        """Observe how long one C-STORE took, whatever its outcome."""
        self.cstore_duration.observe(max(seconds, 0.0))

    def bytes_received(self, count: int) -> None:
        """Count the bytes of one received data set."""
        self.received_bytes.inc(count)

    # -- assemble --------------------------------------------------------------------------
    def series_completion(self, reason: str) -> None:
        """Count a completed series by the trigger its reason names."""
        self.series_completed.labels(series_trigger(reason)).inc()

    def study_completion(self, reason: str) -> None:
        """Count a study decided by the trigger its reason names."""
        self.studies_completed.labels(study_trigger(reason)).inc()

    # -- infer, encode, send ---------------------------------------------------------------
    def stage(self, stage: str, model: str, seconds: float) -> None:
        """Observe one stage's duration for one model (:data:`STAGES`)."""
        self.stage_duration.labels(_checked(stage, STAGES, "stage"), model).observe(
            max(seconds, 0.0)
        )

    def job_finished(self, model: str, outcome: str) -> None:
        """Count a job run that ended (:data:`JOB_OUTCOMES`)."""
        self.jobs.labels(model, _checked(outcome, JOB_OUTCOMES, "job outcome")).inc()

    def model_loaded(self, model: str) -> None:
        """Count one load of a model's weights."""
        self.model_loads.labels(model).inc()

    def delivery(self, destination: str, outcome: str) -> None:
        """Count one delivery row's attempt (:data:`DELIVERY_OUTCOMES`)."""
        checked = _checked(outcome, DELIVERY_OUTCOMES, "delivery outcome")
        self.deliveries.labels(destination, checked).inc()

    def delivery_attempt(self, destination: str, seconds: float) -> None:
        """Observe one association's time with a destination."""
        self.delivery_attempt_duration.labels(destination).observe(max(seconds, 0.0))

    def result_delivered(self, model: str, since_last_image_s: float, deliver_s: float) -> None:
        """Observe a result accepted by a destination: end to end, and its deliver stage."""
        self.last_image_to_delivered.labels(model).observe(max(since_last_image_s, 0.0))
        self.stage("deliver", model, deliver_s)

    # -- gauges of live state, read at scrape time -----------------------------------------
    def watch_associations(self, count: Callable[[], float]) -> None:
        """Read the active associations from ``count`` at each scrape."""
        self.active_associations.set_function(count)

    def watch_storage(self, free_bytes: Callable[[], float], reserve_bytes: int) -> None:
        """Read the free space from ``free_bytes`` at each scrape (NaN when it raises
        OSError: the scrape goes on); export the reserve."""

        def read() -> float:
            try:
                return float(free_bytes())
            except OSError:
                return math.nan

        self.storage_free_bytes.set_function(read)
        self.storage_reserve_bytes.set(reserve_bytes)

    def watch_models(
        self, installed: int, loaded: Callable[[], float], *, unavailable: int = 0
    ) -> None:
        """Export how many models are installed and how many cannot run here; read how many
        are loaded at each scrape."""
        self.models_installed.set(installed)
        self.models_unavailable.set(unavailable)
        self.models_loaded.set_function(loaded)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what ``/metrics`` answers)."""
        return generate_latest(self.registry)
