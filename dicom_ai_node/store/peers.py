"""Store: the node's peers as the operator sees them: destinations and associations.

A destination's summary counts its outbox rows by state and reads its latest attempt
from the (destination, last attempt) index; its detail lists what waits to be sent and
the latest attempts. Associations are the listener's history (pruned to the newest
rows by ``store.associations``). Read-only; the AE titles, addresses and errors shown
hold text a peer sent (the web stage escapes it).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import DeliveryState
from .db import as_utc
from .rows import page_size
from .tables import Association, Delivery, Job, Pause, Result, Study

__all__ = [
    "AssociationRow",
    "DeliveryRow",
    "DestinationDetail",
    "DestinationSummary",
    "delivery_row",
    "delivery_rows",
    "destination_detail",
    "destinations",
    "paused_names",
    "recent_associations",
]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return as_utc(value) if value is not None else None


def paused_names(session: Session, kind: str) -> dict[str, Pause]:
    """The paused models or destinations (``kind``), by name."""
    return {p.name: p for p in session.scalars(select(Pause).where(Pause.kind == kind))}


# -- destinations -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    """One result to one destination: the outbox row, with its result and job.

    ``last_attempt_at`` is ``None`` until the first attempt; ``next_attempt_at`` is
    when a pending row is due (a delivered or failed row keeps its last value).
    """

    pk: int
    destination: str
    state: DeliveryState
    attempts: int
    last_status: int | None
    last_error: str
    last_attempt_at: dt.datetime | None
    next_attempt_at: dt.datetime
    deadline_at: dt.datetime
    delivered_at: dt.datetime | None
    result_pk: int
    kind: str
    sop_instance_uid: str
    job_pk: int
    model_name: str
    study_instance_uid: str


def delivery_rows() -> Select[*tuple[Any, ...]]:
    """Deliveries with their result, job and study (:func:`delivery_row` reads a row)."""
    return (
        select(
            Delivery,
            Result.kind,
            Result.sop_instance_uid,
            Result.job_fk,
            Job.model_name,
            Study.study_instance_uid,
        )
        .join(Result, Delivery.result_fk == Result.pk)
        .join(Job, Result.job_fk == Job.pk)
        .join(Study, Job.study_fk == Study.pk)
    )


def delivery_row(row: Any) -> DeliveryRow:
    """A row of :func:`delivery_rows` as a value."""
    d, kind, sop_instance_uid, job_pk, model_name, study_instance_uid = row
    return DeliveryRow(
        pk=d.pk,
        destination=d.destination,
        state=DeliveryState(d.state),
        attempts=d.attempts,
        last_status=d.last_status,
        last_error=d.last_error,
        last_attempt_at=_utc(d.last_attempt_at),
        next_attempt_at=as_utc(d.next_attempt_at),
        deadline_at=as_utc(d.deadline_at),
        delivered_at=_utc(d.delivered_at),
        result_pk=d.result_fk,
        kind=kind,
        sop_instance_uid=sop_instance_uid,
        job_pk=job_pk,
        model_name=model_name,
        study_instance_uid=study_instance_uid,
    )


@dataclass(frozen=True)
class DestinationSummary:
    """One destination: its outbox by state, its last attempt, and whether it is paused.

    ``last_status`` and ``last_error`` are those of the latest attempt (status 0 and no
    error when it was delivered); ``paused_by`` is ``None`` unless it is paused.
    """

    destination: str
    pending: int
    due: int
    delivered: int
    failed: int
    last_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str
    paused: bool
    paused_at: dt.datetime | None
    paused_by: str | None


def destinations(
    sessions: sessionmaker[Session], now: dt.datetime, configured: Sequence[str] = ()
) -> list[DestinationSummary]:
    """Every destination configured, named by a delivery, or paused, by name.

    Parameters
    ----------
    sessions:
        The session factory.
    now:
        The current time (what is due).
    configured:
        The destinations of the settings (``AE@HOST:PORT``): listed even when nothing
        was sent there yet.
    """
    with sessions() as session:
        return _destinations(session, now, None, configured)


def _destinations(
    session: Session, now: dt.datetime, only: str | None, configured: Sequence[str]
) -> list[DestinationSummary]:
    counts = select(Delivery.destination, Delivery.state, func.count()).group_by(
        Delivery.destination, Delivery.state
    )  # reads the (destination, state) index only
    due = (
        select(Delivery.destination, func.count())
        .where(Delivery.state == DeliveryState.PENDING.value, Delivery.next_attempt_at <= now)
        .group_by(Delivery.destination)
    )
    if only is not None:
        counts = counts.where(Delivery.destination == only)
        due = due.where(Delivery.destination == only)
    by: dict[str, dict[str, int]] = defaultdict(dict)
    for dest, state, count in session.execute(counts):
        by[dest][state] = count
    for dest, count in session.execute(due):
        by[dest]["due"] = count
    paused = paused_names(session, "destination")
    names = sorted(set(by) | {n for n in (*paused, *configured) if only is None or n == only})
    return [_destination(session, name, by[name], paused.get(name)) for name in names]


def _destination(
    session: Session, name: str, counts: Mapping[str, int], pause: Pause | None
) -> DestinationSummary:
    last = session.execute(  # the newest attempt: read from the (destination, time) index
        select(Delivery.last_attempt_at, Delivery.last_status, Delivery.last_error)
        .where(Delivery.destination == name, Delivery.last_attempt_at.is_not(None))
        .order_by(Delivery.last_attempt_at.desc())
        .limit(1)
    ).first()
    return DestinationSummary(
        destination=name,
        pending=counts.get(DeliveryState.PENDING.value, 0),
        due=counts.get("due", 0),
        delivered=counts.get(DeliveryState.DELIVERED.value, 0),
        failed=counts.get(DeliveryState.FAILED.value, 0),
        last_attempt_at=_utc(last[0]) if last else None,
        last_status=last[1] if last else None,
        last_error=last[2] if last else "",
        paused=pause is not None,
        paused_at=as_utc(pause.paused_at) if pause is not None else None,
        paused_by=pause.username if pause is not None else None,
    )


@dataclass(frozen=True)
class DestinationDetail:
    """One destination: its summary, what waits in its outbox, and its latest attempts.

    Attributes
    ----------
    outbox:
        Pending deliveries, the next due first.
    recent:
        Deliveries tried at least once, the latest attempt first.
    """

    summary: DestinationSummary
    outbox: tuple[DeliveryRow, ...]
    recent: tuple[DeliveryRow, ...]


def destination_detail(
    sessions: sessionmaker[Session],
    destination: str,
    now: dt.datetime,
    limit: int = 50,
    *,
    configured: Sequence[str] = (),
) -> DestinationDetail | None:
    """A destination's outbox and latest attempts (``limit`` of each).

    ``None`` when the destination is not in ``configured``, no delivery names it and it
    is not paused.
    """
    limit = page_size(limit)
    with sessions() as session:
        found = _destinations(session, now, destination, configured)
        if not found:
            return None
        outbox = session.execute(
            delivery_rows()
            .where(
                Delivery.destination == destination,
                Delivery.state == DeliveryState.PENDING.value,
            )
            .order_by(Delivery.next_attempt_at, Delivery.pk)
            .limit(limit)
        ).all()
        recent = session.execute(
            delivery_rows()
            .where(Delivery.destination == destination, Delivery.last_attempt_at.is_not(None))
            .order_by(Delivery.last_attempt_at.desc(), Delivery.pk.desc())
            .limit(limit)
        ).all()
        return DestinationDetail(
            found[0],
            tuple(delivery_row(r) for r in outbox),
            tuple(delivery_row(r) for r in recent),
        )


# -- associations -------------------------------------------------------------------------


@dataclass(frozen=True)
class AssociationRow:
    """One association a peer opened or tried to open, and how it ended.

    ``outcome`` is ``completed``, ``aborted``, ``rejected`` or ``refused``; ``reason``
    says why one was not completed. The AE titles and the reason hold text a peer sent.
    """

    pk: int
    started_at: dt.datetime
    ended_at: dt.datetime
    calling_ae_title: str
    called_ae_title: str
    address: str
    instances: int
    outcome: str
    reason: str


def recent_associations(
    sessions: sessionmaker[Session],
    limit: int = 100,
    *,
    calling_ae: str | None = None,
    outcome: str | None = None,
) -> list[AssociationRow]:
    """The latest associations, newest first, optionally of one AE title or outcome."""
    query = select(Association).order_by(Association.pk.desc()).limit(page_size(limit))
    if calling_ae:
        query = query.where(Association.calling_ae_title == calling_ae)
    if outcome:
        query = query.where(Association.outcome == outcome)
    with sessions() as session:
        return [
            AssociationRow(
                pk=a.pk,
                started_at=as_utc(a.started_at),
                ended_at=as_utc(a.ended_at),
                calling_ae_title=a.calling_ae_title,
                called_ae_title=a.called_ae_title,
                address=a.address,
                instances=a.instances,
                outcome=a.outcome,
                reason=a.reason,
            )
            for a in session.scalars(query)
        ]
