"""Store: the operator's status screen and failures by cause, read-only.

Each function reads in one session and returns frozen values. Counts read indexes (job
state, delivery state, series state), never a whole table of finished rows; no patient
data is read here. The destinations and associations are in :mod:`.peers` (importable
from here too).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..domain import DeliveryState, JobState, SeriesState
from .db import as_utc
from .peers import (
    AssociationRow,
    DeliveryRow,
    DestinationDetail,
    DestinationSummary,
    destination_detail,
    destinations,
    paused_names,
    recent_associations,
)
from .rows import page_size
from .tables import Delivery, Instance, Job, Series, Study

__all__ = [
    "EXAMPLES",
    "AssociationRow",
    "DeliveryRow",
    "DestinationDetail",
    "DestinationSummary",
    "FailureGroup",
    "ModelQueue",
    "OutboxQueue",
    "StatusSummary",
    "destination_detail",
    "destinations",
    "failed_jobs",
    "failures_by_cause",
    "recent_associations",
    "status_summary",
]

#: Example keys shown per failure group.
EXAMPLES = 5
_FAILED_JOBS = (JobState.FAILED.value, JobState.QUALITY_FAILED.value)


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelQueue:
    """One model's jobs waiting and running; the oldest waiting one's age in seconds."""

    model_name: str
    queued: int
    running: int
    oldest_queued_age_s: float | None
    paused: bool


@dataclass(frozen=True)
class OutboxQueue:
    """One destination's deliveries waiting (``pending``, of which ``due`` now) and failed."""

    destination: str
    pending: int
    due: int
    failed: int
    paused: bool


@dataclass(frozen=True)
class StatusSummary:
    """The status screen, and the gauges read at scrape time.

    Attributes
    ----------
    models:
        Each model with a queued or running job, or paused, by name.
    outbox:
        Each destination with a pending or failed delivery, or paused, by name.
    last_received_at:
        When the newest instance was received; ``None`` before the first.
    series_receiving:
        Series still receiving instances (their quiet period not over).
    jobs_by_state:
        Every :class:`~dicom_ai_node.domain.JobState` value and how many jobs are in it.
    """

    at: dt.datetime
    models: tuple[ModelQueue, ...]
    outbox: tuple[OutboxQueue, ...]
    last_received_at: dt.datetime | None
    studies: int
    series_receiving: int
    jobs_by_state: Mapping[str, int]


def status_summary(sessions: sessionmaker[Session], now: dt.datetime) -> StatusSummary:
    """Queues per model and destination, the last instance received and the totals."""
    active = (JobState.QUEUED.value, JobState.RUNNING.value)
    waiting = (DeliveryState.PENDING.value, DeliveryState.FAILED.value)
    with sessions() as session:
        job_rows = session.execute(
            select(Job.model_name, Job.state, func.count(), func.min(Job.created_at))
            .where(Job.state.in_(active))
            .group_by(Job.state, Job.model_name)  # state first: SQLite reads the state index
        ).all()
        outbox_rows = session.execute(
            select(
                Delivery.destination,
                Delivery.state,
                func.count(),
                func.count().filter(Delivery.next_attempt_at <= now),
            )
            .where(Delivery.state.in_(waiting))
            .group_by(Delivery.state, Delivery.destination)
        ).all()
        by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        last = session.scalar(select(Instance.received_at).order_by(Instance.pk.desc()).limit(1))
        studies = session.scalar(select(func.count()).select_from(Study))
        receiving = session.scalar(
            select(func.count()).where(Series.state == SeriesState.RECEIVING.value)
        )
        paused_models = set(paused_names(session, "model"))
        paused_destinations = set(paused_names(session, "destination"))
    models: dict[str, dict[str, Any]] = {name: {} for name in paused_models}
    for model, state, count, oldest in job_rows:
        models.setdefault(model, {})[state] = count
        if state == JobState.QUEUED.value:
            models[model]["age"] = max(0.0, (now - as_utc(oldest)).total_seconds())
    outbox: dict[str, dict[str, int]] = {name: {} for name in paused_destinations}
    for dest, state, count, due in outbox_rows:
        outbox.setdefault(dest, {})[state] = count
        if state == DeliveryState.PENDING.value:
            outbox[dest]["due"] = due
    return StatusSummary(
        at=now,
        models=tuple(
            ModelQueue(
                model_name=name,
                queued=m.get(JobState.QUEUED.value, 0),
                running=m.get(JobState.RUNNING.value, 0),
                oldest_queued_age_s=m.get("age"),
                paused=name in paused_models,
            )
            for name, m in sorted(models.items())
        ),
        outbox=tuple(
            OutboxQueue(
                destination=name,
                pending=o.get(DeliveryState.PENDING.value, 0),
                due=o.get("due", 0),
                failed=o.get(DeliveryState.FAILED.value, 0),
                paused=name in paused_destinations,
            )
            for name, o in sorted(outbox.items())
        ),
        last_received_at=as_utc(last) if last is not None else None,
        studies=int(studies or 0),
        series_receiving=int(receiving or 0),
        jobs_by_state={s.value: 0 for s in JobState} | {k: int(v) for k, v in by_state.items()},
    )


# -- failures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureGroup:
    """Failed jobs, or failed deliveries, with the same cause.

    Attributes
    ----------
    kind:
        ``jobs`` (failed and quality-failed jobs not re-run since) or ``deliveries``
        (failed for good: their retry window is over).
    cause:
        The jobs' reason, or the deliveries' last error.
    names:
        The models (jobs) or destinations (deliveries) involved, sorted.
    example_ids:
        Up to :data:`EXAMPLES` job or delivery keys, newest first.
    latest_at:
        When the newest of them changed (jobs) or was last tried (deliveries).
    """

    kind: str
    cause: str
    count: int
    names: tuple[str, ...]
    example_ids: tuple[int, ...]
    latest_at: dt.datetime | None


def failed_jobs() -> tuple[ColumnElement[bool], ...]:
    """Failed and quality-failed jobs that no later job of their model and subject replaced.

    A failure re-run since (by an operator, or because new data came) has a later job;
    the failures screen lists only those still standing.
    """
    later = aliased(Job)
    rerun = exists().where(
        later.subject == Job.subject, later.model_name == Job.model_name, later.pk > Job.pk
    )
    return (Job.state.in_(_FAILED_JOBS), ~rerun)


def failures_by_cause(sessions: sessionmaker[Session], limit: int = 200) -> list[FailureGroup]:
    """Failed jobs and failed deliveries grouped by cause, the ``limit`` largest groups
    (largest first)."""
    jobs = failed_jobs()
    sent = (Delivery.state == DeliveryState.FAILED.value,)
    tried = func.coalesce(Delivery.last_attempt_at, Delivery.next_attempt_at)
    with sessions() as session:
        groups = _groups(
            session,
            "jobs",
            select(Job.reason, Job.model_name, func.count(), func.max(Job.updated_at))
            .where(*jobs)
            .group_by(Job.reason, Job.model_name),
            _examples(Job.pk, Job.reason, jobs),
        )
        groups += _groups(
            session,
            "deliveries",
            select(Delivery.last_error, Delivery.destination, func.count(), func.max(tried))
            .where(*sent)
            .group_by(Delivery.last_error, Delivery.destination),
            _examples(Delivery.pk, Delivery.last_error, sent),
        )
    return sorted(groups, key=lambda g: (-g.count, g.kind, g.cause))[: page_size(limit)]


def _examples(pk: Any, cause: Any, where: Sequence[Any]) -> Select[*tuple[Any, ...]]:
    """The newest :data:`EXAMPLES` keys per cause (a window over the failed rows)."""
    rank = func.row_number().over(partition_by=cause, order_by=pk.desc()).label("rank")
    inner = select(pk.label("pk"), cause.label("cause"), rank).where(*where).subquery()
    return (
        select(inner.c.cause, inner.c.pk)
        .where(inner.c.rank <= EXAMPLES)
        .order_by(inner.c.pk.desc())
    )


def _groups(
    session: Session,
    kind: str,
    counts: Select[*tuple[Any, ...]],
    examples: Select[*tuple[Any, ...]],
) -> list[FailureGroup]:
    total: dict[str, int] = defaultdict(int)
    names: dict[str, set[str]] = defaultdict(set)
    latest: dict[str, dt.datetime] = {}
    for cause, name, count, at in session.execute(counts):
        total[cause] += count
        names[cause].add(name)
        if at is not None:
            latest[cause] = max(latest.get(cause, as_utc(at)), as_utc(at))
    ids: dict[str, list[int]] = defaultdict(list)
    for cause, pk in session.execute(examples):
        ids[cause].append(pk)
    return [
        FailureGroup(
            kind, cause, n, tuple(sorted(names[cause])), tuple(ids[cause]), latest.get(cause)
        )
        for cause, n in total.items()
    ]
