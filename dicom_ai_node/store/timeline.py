"""Store: a study's timeline, a job's detail and a result's files, as the operator reads them.

A study's timeline follows its way through the node: received (instances, senders),
each series complete and why, routed (the rules, the chosen series and why, the other
candidates), each job's run (model, seconds, state and reason), its results and their
deliveries per destination, and the history lines (operator actions included), each
with its time so that the screen can show how long each step took. The routing is read
back from what the assembler stored with the job (:mod:`.routing_view`). Read-only;
patient details only with ``with_patient=True``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import SeriesState
from .db import as_utc
from .peers import DeliveryRow, delivery_row, delivery_rows
from .routing_view import Candidate, Routing, routing_of
from .rows import JobSummary, StudySummary, job_rows, job_summaries, study_summaries
from .tables import Delivery, Event, Instance, Job, Result, Series, Study

__all__ = [
    "MAX_EVENTS",
    "Candidate",
    "EventRow",
    "JobDetail",
    "Received",
    "ResultFiles",
    "ResultRow",
    "Routing",
    "SeriesStep",
    "StudyTimeline",
    "job_detail",
    "result_files",
    "routing_of",
    "study_timeline",
]

#: The most history lines a timeline holds (the newest; late instances add one each).
MAX_EVENTS = 1000


@dataclass(frozen=True)
class EventRow:
    """One line of a study's history (no patient data); ``kind`` ``action`` for an operator's."""

    pk: int
    at: dt.datetime
    kind: str
    message: str
    series_instance_uid: str


@dataclass(frozen=True)
class SeriesStep:
    """A series: received, complete (when, and why: ``reason``), then routed or not."""

    pk: int
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    calling_ae_title: str
    instance_count: int
    expected_count: int | None
    late_instances: int
    generation: int
    state: SeriesState
    reason: str
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    completed_at: dt.datetime | None


@dataclass(frozen=True)
class Received:
    """What a study's senders sent: instances, their AE titles, the first and last time."""

    instance_count: int
    senders: tuple[str, ...]
    first_received_at: dt.datetime | None
    last_received_at: dt.datetime | None


@dataclass(frozen=True)
class ResultRow:
    """One object a job made, and its delivery to each destination."""

    pk: int
    kind: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    created_at: dt.datetime
    deliveries: tuple[DeliveryRow, ...]


@dataclass(frozen=True)
class JobDetail:
    """One job: its row, why it runs on what it runs on, its results and its history.

    ``predecessor_pk`` is the job it revises; ``successor_pks`` the jobs revising it;
    ``events`` the study's history lines that name the job.
    """

    job: JobSummary
    input_key: str
    lease_until: dt.datetime | None
    predecessor_pk: int | None
    successor_pks: tuple[int, ...]
    routing: Routing
    results: tuple[ResultRow, ...]
    events: tuple[EventRow, ...]


@dataclass(frozen=True)
class StudyTimeline:
    """A study from its first instance to its last delivery.

    ``events`` is the whole history in order (the newest :data:`MAX_EVENTS` lines;
    ``events_left_out`` says how many older ones are not shown).
    """

    study: StudySummary
    received: Received
    series: tuple[SeriesStep, ...]
    jobs: tuple[JobDetail, ...]
    events: tuple[EventRow, ...]
    events_left_out: int


def _event(e: Event) -> EventRow:
    return EventRow(e.pk, as_utc(e.at), e.kind, e.message, e.series_instance_uid)


def _job_details(
    session: Session, rows: Sequence[Any], events: Sequence[EventRow]
) -> list[JobDetail]:
    """Details of the jobs of :func:`~.rows.job_rows` rows, with ``events`` naming each."""
    pks = [r.pk for r in rows]
    extra = {
        pk: (explanation, input_key, predecessor, lease)
        for pk, explanation, input_key, predecessor, lease in session.execute(
            select(
                Job.pk, Job.explanation, Job.input_key, Job.predecessor_fk, Job.lease_until
            ).where(Job.pk.in_(pks))
        )
    }
    successors: dict[int, list[int]] = defaultdict(list)
    for pk, predecessor in session.execute(
        select(Job.pk, Job.predecessor_fk).where(Job.predecessor_fk.in_(pks)).order_by(Job.pk)
    ):
        if predecessor is not None:
            successors[predecessor].append(pk)
    sent: dict[int, list[DeliveryRow]] = defaultdict(list)
    for row in session.execute(
        delivery_rows().where(Result.job_fk.in_(pks)).order_by(Delivery.destination, Delivery.pk)
    ):
        delivery = delivery_row(row)
        sent[delivery.result_pk].append(delivery)
    results: dict[int, list[ResultRow]] = defaultdict(list)
    for r in session.scalars(select(Result).where(Result.job_fk.in_(pks)).order_by(Result.pk)):
        results[r.job_fk].append(
            ResultRow(
                r.pk,
                r.kind,
                r.sop_instance_uid,
                r.sop_class_uid,
                r.series_instance_uid,
                as_utc(r.created_at),
                tuple(sent[r.pk]),
            )
        )
    out = []
    for summary in job_summaries(session, rows):
        explanation, input_key, predecessor, lease = extra[summary.pk]
        named = re.compile(rf"\bjob {summary.pk}\b")
        out.append(
            JobDetail(
                job=summary,
                input_key=input_key,
                lease_until=as_utc(lease) if lease is not None else None,
                predecessor_pk=predecessor,
                successor_pks=tuple(successors[summary.pk]),
                routing=routing_of(explanation or {}, summary.model_name),
                results=tuple(results[summary.pk]),
                events=tuple(e for e in events if named.search(e.message)),
            )
        )
    return out


def _series_step(s: Series) -> SeriesStep:
    return SeriesStep(
        pk=s.pk,
        series_instance_uid=s.series_instance_uid,
        modality=s.modality,
        series_number=s.series_number,
        series_description=s.series_description,
        calling_ae_title=s.calling_ae_title,
        instance_count=s.instance_count,
        expected_count=s.expected_count,
        late_instances=s.late_instances,
        generation=s.generation,
        state=SeriesState(s.state),
        reason=s.reason,
        first_received_at=as_utc(s.first_received_at),
        last_received_at=as_utc(s.last_received_at),
        completed_at=as_utc(s.completed_at) if s.completed_at is not None else None,
    )


def _history(session: Session, study_uid: str) -> tuple[list[EventRow], int]:
    """A study's newest :data:`MAX_EVENTS` history lines in order, and how many older ones."""
    rows = session.scalars(
        select(Event)
        .where(Event.study_instance_uid == study_uid)
        .order_by(Event.pk.desc())
        .limit(MAX_EVENTS + 1)
    ).all()
    kept = [_event(e) for e in reversed(rows[:MAX_EVENTS])]
    left_out: int | None = 0
    if len(rows) > MAX_EVENTS:
        left_out = session.scalar(
            select(func.count()).where(Event.study_instance_uid == study_uid, Event.pk < kept[0].pk)
        )
    return kept, int(left_out or 0)


def study_timeline(
    sessions: sessionmaker[Session], study_instance_uid: str, *, with_patient: bool = False
) -> StudyTimeline | None:
    """A study's timeline; ``None`` when no such study was received.

    Parameters
    ----------
    sessions:
        The session factory.
    study_instance_uid:
        Study Instance UID (0020,000D).
    with_patient:
        Read PatientName, PatientID and PatientBirthDate (operator and admin only).
    """
    with sessions() as session:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == study_instance_uid)
        ).one_or_none()
        if study is None:
            return None
        summary = study_summaries(session, [study], with_patient)[0]
        series = session.scalars(
            select(Series).where(Series.study_fk == study.pk).order_by(Series.pk)
        ).all()
        senders = session.scalars(
            select(Instance.calling_ae_title)
            .where(Instance.series_fk.in_([s.pk for s in series]))
            .distinct()
        ).all()
        events, left_out = _history(session, study_instance_uid)
        rows = session.execute(job_rows().where(Job.study_fk == study.pk).order_by(Job.pk)).all()
        jobs = _job_details(session, rows, events)
    return StudyTimeline(
        study=summary,
        received=Received(
            instance_count=sum(s.instance_count for s in series),
            senders=tuple(sorted({a for a in senders if a})),
            first_received_at=min((as_utc(s.first_received_at) for s in series), default=None),
            last_received_at=max((as_utc(s.last_received_at) for s in series), default=None),
        ),
        series=tuple(_series_step(s) for s in series),
        jobs=tuple(jobs),
        events=tuple(events),
        events_left_out=left_out,
    )


def job_detail(sessions: sessionmaker[Session], job_pk: int) -> JobDetail | None:
    """One job with its routing, results, deliveries and history; ``None`` when none."""
    with sessions() as session:
        rows = session.execute(job_rows().where(Job.pk == job_pk)).all()
        if not rows:
            return None
        events, _ = _history(session, rows[0].study_instance_uid)
        return _job_details(session, rows, events)[0]


@dataclass(frozen=True)
class ResultFiles:
    """Where a result and what it was made from are stored (paths relative to the root).

    Attributes
    ----------
    path:
        The result object itself.
    seg_path, sr_path:
        The job's SEG and SR (the first of each kind; the result itself when it is one).
    source_paths:
        The instances of the job's series (its first one), by Instance Number.
    """

    result_pk: int
    kind: str
    path: str
    sop_instance_uid: str
    job_pk: int
    model_name: str
    study_instance_uid: str
    series_instance_uid: str
    seg_path: str | None
    sr_path: str | None
    source_paths: tuple[str, ...]


def result_files(sessions: sessionmaker[Session], result_pk: int) -> ResultFiles | None:
    """A result's stored path, its job's other objects and its source instances."""
    with sessions() as session:
        found = session.execute(
            select(Result, Job.model_name, Job.series_fk, Study.study_instance_uid)
            .join(Job, Result.job_fk == Job.pk)
            .join(Study, Job.study_fk == Study.pk)
            .where(Result.pk == result_pk)
        ).one_or_none()
        if found is None:
            return None
        result, model_name, series_pk, study_uid = found
        siblings: dict[str, str] = {}
        for kind, path in session.execute(
            select(Result.kind, Result.path)
            .where(Result.job_fk == result.job_fk)
            .order_by(Result.pk)
        ):
            siblings.setdefault(kind, path)
        siblings[result.kind] = result.path
        series_uid = session.scalar(
            select(Series.series_instance_uid).where(Series.pk == series_pk)
        )
        paths = session.scalars(
            select(Instance.path)
            .where(Instance.series_fk == series_pk)
            .order_by(Instance.instance_number.is_(None), Instance.instance_number, Instance.pk)
        ).all()
    return ResultFiles(
        result_pk=result.pk,
        kind=result.kind,
        path=result.path,
        sop_instance_uid=result.sop_instance_uid,
        job_pk=result.job_fk,
        model_name=model_name,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid or "",
        seg_path=siblings.get("SEG"),
        sr_path=siblings.get("SR"),
        source_paths=tuple(paths),
    )
