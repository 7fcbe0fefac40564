"""Store: the models and destinations an operator paused, and the history line of each action.

A paused model's queued jobs are not claimed (``store.jobs.claim_job``); a paused
destination's deliveries are not due (``store.outbox``) and their retry windows keep
running. Every operator action (these and those of :mod:`.actions`) writes a line
``<action> by <user>: <object>`` of kind :data:`ACTION_EVENT` to the history
(:func:`record_action`); a pause belongs to no study.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import parse_enum
from ..errors import Conflict
from .db import as_utc
from .index import record_event
from .tables import Job, Pause, Series, Study

__all__ = [
    "ACTION_EVENT",
    "PauseInfo",
    "PauseKind",
    "pause",
    "paused",
    "pauses",
    "record_action",
    "record_job_action",
    "resume",
]

#: The ``event.kind`` of every operator action.
ACTION_EVENT = "action"


class PauseKind(enum.StrEnum):
    """What can be paused: a model (its jobs wait) or a destination (nothing is sent)."""

    MODEL = "model"
    DESTINATION = "destination"


@dataclass(frozen=True)
class PauseInfo:
    """One paused model or destination: who paused it, and when."""

    kind: PauseKind
    name: str
    paused_at: dt.datetime
    username: str


def record_action(
    session: Session,
    now: dt.datetime,
    action: str,
    user: str,
    what: str,
    study_uid: str = "",
    series_uid: str = "",
) -> None:
    """Write ``<action> by <user>: <object>`` to a study's history (none: ``""``)."""
    record_event(session, now, study_uid, ACTION_EVENT, f"{action} by {user}: {what}", series_uid)


def record_job_action(
    session: Session, now: dt.datetime, action: str, user: str, what: str, job: Job
) -> None:
    """Write ``<action> by <user>: <object>`` to the history of a job's study and series."""
    study_uid, series_uid = session.execute(
        select(Study.study_instance_uid, Series.series_instance_uid)
        .join(Series, Series.study_fk == Study.pk)
        .where(Series.pk == job.series_fk)
    ).one()
    record_action(session, now, action, user, what, study_uid, series_uid)


def pause(
    sessions: sessionmaker[Session], kind: str | PauseKind, name: str, user: str, now: dt.datetime
) -> None:
    """Pause a model (its queued jobs wait) or a destination (its deliveries wait).

    A paused destination's retry windows keep running. The caller checks that the model
    or destination exists.

    Raises
    ------
    ValueError
        When ``kind`` is neither ``model`` nor ``destination``, or the name is empty.
    Conflict
        When it is paused already.
    """
    kind = parse_enum(PauseKind, kind)
    if not name.strip():
        raise ValueError(f"name the {kind.value} to pause")
    with sessions.begin() as session:
        if _paused_row(session, kind, name) is not None:
            raise Conflict(f"{kind.value} {name} is paused already")
        session.add(Pause(kind=kind.value, name=name, paused_at=now, username=user))
        record_action(session, now, "pause", user, f"{kind.value} {name}")


def resume(
    sessions: sessionmaker[Session], kind: str | PauseKind, name: str, user: str, now: dt.datetime
) -> None:
    """Resume a paused model or destination.

    Raises
    ------
    ValueError
        When ``kind`` is neither ``model`` nor ``destination``.
    Conflict
        When it is not paused.
    """
    kind = parse_enum(PauseKind, kind)
    with sessions.begin() as session:
        row = _paused_row(session, kind, name)
        if row is None:
            raise Conflict(f"{kind.value} {name} is not paused")
        session.delete(row)
        record_action(session, now, "resume", user, f"{kind.value} {name}")


def _paused_row(session: Session, kind: PauseKind, name: str) -> Pause | None:
    return session.scalars(
        select(Pause).where(Pause.kind == kind.value, Pause.name == name)
    ).first()


def paused(sessions: sessionmaker[Session], kind: str | PauseKind) -> set[str]:
    """The names of the paused models, or destinations (``AE@HOST:PORT``)."""
    kind = parse_enum(PauseKind, kind)
    with sessions() as session:
        return set(session.scalars(select(Pause.name).where(Pause.kind == kind.value)))


def pauses(sessions: sessionmaker[Session]) -> list[PauseInfo]:
    """Everything paused, with who paused it and when, oldest first."""
    with sessions() as session:
        return [
            PauseInfo(PauseKind(p.kind), p.name, as_utc(p.paused_at), p.username)
            for p in session.scalars(select(Pause).order_by(Pause.pk))
        ]
