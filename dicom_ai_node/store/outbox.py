"""Store: the delivery outbox: what is due to which destination, and each attempt's outcome.

A job's completion (:func:`~.jobs.complete_job`) writes one row per result and
destination in its own transaction; from then on the rows are the send stage's work:
due rows are read here, and each attempt ends a row delivered, due again later, or
failed once its retry window is over (the study's history says which). Rows for a
destination an operator paused (``store.actions.pause``) are not due until it resumes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..domain import DeliveryState
from .db import as_utc
from .index import record_event
from .tables import Delivery, Job, Pause, Result, Series, Study

__all__ = ["DueDelivery", "due_deliveries", "due_destinations", "finish_delivery_attempt"]


def _due(now: dt.datetime) -> tuple[ColumnElement[bool], ...]:
    """Pending, its next attempt due, its destination not paused."""
    return (
        Delivery.state == DeliveryState.PENDING.value,
        Delivery.next_attempt_at <= now,
        ~exists().where(Pause.kind == "destination", Pause.name == Delivery.destination),
    )


@dataclass(frozen=True)
class DueDelivery:
    """One result due to be sent to one destination."""

    pk: int
    destination: str
    path: str
    sop_instance_uid: str
    attempts: int
    deadline_at: dt.datetime
    study_instance_uid: str
    #: The model that made it, when, and the last instance of the job's series (for the
    #: metrics: the deliver stage, and last image to delivered).
    model_name: str = ""
    result_created_at: dt.datetime | None = None
    last_received_at: dt.datetime | None = None
    #: Times an operator put the row back (re-send, retry); 0 for the node's own sending.
    resends: int = 0


def due_deliveries(
    sessions: sessionmaker[Session],
    now: dt.datetime,
    destination: str | None = None,
    limit: int = 500,
) -> list[DueDelivery]:
    """Pending deliveries whose next attempt is due, oldest first (none to a paused destination).

    Parameters
    ----------
    sessions:
        The session factory.
    now:
        The current time.
    destination:
        Only this destination's (``AE@HOST:PORT``); ``None`` for every destination.
        Filtering here, not after the limit, keeps a large backlog for one dead
        destination from hiding another destination's due work.
    limit:
        At most this many rows.
    """
    query = (
        select(
            Delivery,
            Result.path,
            Result.sop_instance_uid,
            Study.study_instance_uid,
            Job.model_name,
            Result.created_at,
            Series.last_received_at,
        )
        .join(Result, Delivery.result_fk == Result.pk)
        .join(Job, Result.job_fk == Job.pk)
        .join(Study, Job.study_fk == Study.pk)
        .join(Series, Job.series_fk == Series.pk)
        .where(*_due(now))
    )
    if destination is not None:
        query = query.where(Delivery.destination == destination)
    with sessions() as session:
        rows = session.execute(query.order_by(Delivery.pk).limit(limit)).all()
        return [
            DueDelivery(
                pk=d.pk,
                destination=d.destination,
                path=path,
                sop_instance_uid=uid,
                attempts=d.attempts,
                deadline_at=as_utc(d.deadline_at),
                study_instance_uid=study,
                model_name=model,
                result_created_at=as_utc(created),
                last_received_at=as_utc(last),
                resends=d.resends,
            )
            for d, path, uid, study, model, created, last in rows
        ]


def due_destinations(sessions: sessionmaker[Session], now: dt.datetime) -> list[str]:
    """Every destination with at least one pending delivery due now, whatever its backlog.

    A paused destination is not among them.
    """
    with sessions() as session:
        return sorted(session.scalars(select(Delivery.destination).where(*_due(now)).distinct()))


def finish_delivery_attempt(
    sessions: sessionmaker[Session],
    delivery: DueDelivery,
    now: dt.datetime,
    *,
    delivered: bool,
    status: int | None,
    error: str,
    next_attempt_at: dt.datetime | None,
) -> bool:
    """Record one attempt: delivered, retried later, or failed for good (window over).

    Returns
    -------
    bool
        ``False``, and nothing written, when the row changed since it was read as due (an
        operator re-sent it meanwhile: it starts again from no attempts and is due now).
        The fence is the row's attempts and its re-send count, so an attempt in flight
        when an operator re-sent the row cannot undo the re-send, from whatever attempt.
    """
    values: dict[str, Any] = {
        "attempts": delivery.attempts + 1,
        "last_status": status,
        "last_error": error,
        "last_attempt_at": now,
    }
    if delivered:
        values.update(state=DeliveryState.DELIVERED.value, delivered_at=now)
    elif next_attempt_at is None:
        values.update(state=DeliveryState.FAILED.value)
    else:
        values.update(next_attempt_at=next_attempt_at)
    with sessions.begin() as session:
        kept = session.execute(
            update(Delivery)
            .where(
                Delivery.pk == delivery.pk,
                Delivery.state == DeliveryState.PENDING.value,
                Delivery.attempts == delivery.attempts,
                Delivery.resends == delivery.resends,
            )
            .values(**values)
        )
        if not kept.rowcount:  # type: ignore[attr-defined]
            return False
        if delivered or next_attempt_at is None:
            what = "delivered" if delivered else f"failed for good: {error}"
            record_event(
                session,
                now,
                delivery.study_instance_uid,
                "delivery",
                f"{delivery.sop_instance_uid} to {delivery.destination}: {what}",
            )
    return True
