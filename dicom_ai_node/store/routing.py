"""Store: what routing reads and decides (the only SQL for series decisions and new jobs).

Routing runs in two steps over the database (see docs/architecture.md): each complete
series is routed for the rules that take each series (:func:`record_routing` with the
series' new state, WAITING), then each study whose series are all complete and which is
quiet is routed for the rules that choose among its series. Both read a snapshot
(:func:`stored_series`, :func:`stored_study`) and write their decision in one
transaction that holds only if the series it decided about did not change meanwhile (a
late instance re-opens a series): otherwise nothing is written and the next sweep
decides again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..domain import JobState, PlannedJob, PriorJob, SeriesState, Step
from .db import as_utc
from .index import record_event
from .tables import Instance, Job, Series, Study

__all__ = [
    "SeriesDecision",
    "StoredSeries",
    "StoredStudy",
    "job_key",
    "prior_jobs",
    "record_routing",
    "series_in_state",
    "series_pk_of",
    "stored_series",
    "stored_study",
    "studies_waiting",
    "study_pk_of",
]


@dataclass(frozen=True)
class StoredSeries:
    """A series as routing sees it: its header summary and counters."""

    pk: int
    study_pk: int
    study_instance_uid: str
    series_instance_uid: str
    state: SeriesState
    generation: int
    instance_count: int
    last_received_at: dt.datetime
    calling_ae_title: str
    header: Mapping[str, Any]
    sop_class_uids: frozenset[str]
    #: Why it is in its state (for a complete series: what completed it).
    reason: str = ""


@dataclass(frozen=True)
class StoredStudy:
    """A study's series and, per (subject, model), the latest job."""

    pk: int
    study_instance_uid: str
    series: tuple[StoredSeries, ...]
    jobs: Mapping[tuple[str, str], PriorJob]


@dataclass(frozen=True)
class SeriesDecision:
    """A series' new state and the reason the operator reads.

    ``seen`` is the series as it was read: the decision holds only if it is unchanged.
    """

    seen: StoredSeries
    state: SeriesState
    reason: str


def job_key(model: str, version: str, subject: str, revision: int) -> str:
    """The job's key, which seeds every UID of its results (PS3.5 B.2 via encode)."""
    return f"{model}/{version}/{subject}/r{revision}"


def series_in_state(sessions: sessionmaker[Session], state: SeriesState) -> list[int]:
    """Primary keys of the series in one state, oldest first."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Series.pk).where(Series.state == state.value).order_by(Series.pk)
            )
        )


def studies_waiting(sessions: sessionmaker[Session]) -> list[int]:
    """Studies with a series that waits for the study-level decision."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Series.study_fk)
                .where(Series.state == SeriesState.WAITING.value)
                .distinct()
                .order_by(Series.study_fk)
            )
        )


def _sop_classes(session: Session, series_pks: Sequence[int]) -> dict[int, frozenset[str]]:
    rows = session.execute(
        select(Instance.series_fk, Instance.sop_class_uid)
        .where(Instance.series_fk.in_(series_pks))
        .distinct()
    ).all()
    out: dict[int, set[str]] = {}
    for pk, uid in rows:
        out.setdefault(pk, set()).add(uid)
    return {pk: frozenset(uids) for pk, uids in out.items()}


def _stored(row: Series, study_uid: str, classes: frozenset[str]) -> StoredSeries:
    return StoredSeries(
        pk=row.pk,
        study_pk=row.study_fk,
        study_instance_uid=study_uid,
        series_instance_uid=row.series_instance_uid,
        state=SeriesState(row.state),
        generation=row.generation,
        instance_count=row.instance_count,
        last_received_at=as_utc(row.last_received_at),
        calling_ae_title=row.calling_ae_title,
        header=dict(row.header or {}),
        sop_class_uids=classes,
        reason=row.reason,
    )


def series_pk_of(sessions: sessionmaker[Session], series_instance_uid: str) -> int | None:
    """The primary key of a series by its UID."""
    with sessions() as session:
        return session.scalars(
            select(Series.pk).where(Series.series_instance_uid == series_instance_uid)
        ).first()


def study_pk_of(sessions: sessionmaker[Session], study_instance_uid: str) -> int | None:
    """The index key of a stored study, or None."""
    with sessions() as session:
        return session.scalars(
            select(Study.pk).where(Study.study_instance_uid == study_instance_uid)
        ).first()


def stored_series(sessions: sessionmaker[Session], series_pk: int) -> StoredSeries | None:
    """One series with its SOP Classes, or None when it does not exist."""
    with sessions() as session:
        found = session.execute(
            select(Series, Study.study_instance_uid)
            .join(Study, Series.study_fk == Study.pk)
            .where(Series.pk == series_pk)
        ).one_or_none()
        if found is None:
            return None
        row, study_uid = found
        return _stored(row, study_uid, _sop_classes(session, [row.pk]).get(row.pk, frozenset()))


def prior_jobs(sessions: sessionmaker[Session], study_pk: int) -> dict[tuple[str, str], PriorJob]:
    """The latest revision of each (subject, model) among a study's jobs."""
    with sessions() as session:
        return _latest_jobs(session, study_pk)


def _latest_jobs(session: Session, study_pk: int) -> dict[tuple[str, str], PriorJob]:
    rows = session.scalars(
        select(Job).where(Job.study_fk == study_pk).order_by(Job.revision, Job.pk)
    ).all()
    return {
        (j.subject, j.model_name): PriorJob(j.pk, j.revision, JobState(j.state), j.input_key)
        for j in rows
    }


def stored_study(
    sessions: sessionmaker[Session], study_pk: int, *, sop_classes: bool = True
) -> StoredStudy | None:
    """A study: every series and the latest job per (subject, model).

    ``sop_classes=False`` leaves the series' SOP Classes out (empty) and reads no
    instance row: enough to tell whether the study is complete.
    """
    with sessions() as session:
        study = session.get(Study, study_pk)
        if study is None:
            return None
        rows = session.scalars(
            select(Series).where(Series.study_fk == study_pk).order_by(Series.pk)
        ).all()
        classes = _sop_classes(session, [r.pk for r in rows]) if sop_classes else {}
        uid = study.study_instance_uid
        series = tuple(_stored(r, uid, classes.get(r.pk, frozenset())) for r in rows)
        return StoredStudy(study_pk, uid, series, _latest_jobs(session, study_pk))


def _decide_series(session: Session, decision: SeriesDecision) -> bool:
    """Set one series' state and reason, if it is still as it was read."""
    seen = decision.seen
    result = session.execute(
        update(Series)
        .where(
            Series.pk == seen.pk,
            Series.state == seen.state.value,
            Series.generation == seen.generation,
            Series.instance_count == seen.instance_count,
        )
        .values(state=decision.state.value, reason=decision.reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _new_job(
    session: Session, now: dt.datetime, plan: PlannedJob, version: str, first: StoredSeries
) -> Job:
    """A queued job: revision 0, or a revision naming the job it supersedes."""
    job = Job(
        job_key=job_key(plan.input.model, version, plan.input.subject, plan.revision),
        study_fk=first.study_pk,
        series_fk=first.pk,
        model_name=plan.input.model,
        model_version=version,
        generation=first.generation,
        state=JobState.QUEUED.value,
        reason="waiting for a worker",
        explanation=dict(plan.input.explanation),
        attempts=0,
        created_at=now,
        updated_at=now,
        subject=plan.input.subject,
        revision=plan.revision,
        predecessor_fk=plan.prior.pk if plan.prior is not None else None,
        input_key=plan.input.input_key,
    )
    session.add(job)
    session.flush()
    return job


def _replace_input(
    session: Session, now: dt.datetime, plan: PlannedJob, first: StoredSeries
) -> bool:
    """A queued job takes the new input; False when a worker claimed it meanwhile."""
    assert plan.prior is not None
    result = session.execute(
        update(Job)
        .where(Job.pk == plan.prior.pk, Job.state == JobState.QUEUED.value)
        .values(
            series_fk=first.pk,
            generation=first.generation,
            explanation=dict(plan.input.explanation),
            input_key=plan.input.input_key,
            updated_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class _Changed(Exception):
    """What a decision was made about changed meanwhile: roll back, decide again."""


def _apply(
    session: Session,
    now: dt.datetime,
    plan: PlannedJob,
    versions: Mapping[str, str],
    by_uid: Mapping[str, StoredSeries],
) -> None:
    first = by_uid[plan.input.series_instance_uids[0]]
    study_uid, model = first.study_instance_uid, plan.input.model
    chosen = ", ".join(plan.input.series_instance_uids)
    if plan.step in (Step.NEW, Step.REVISE):
        job = _new_job(session, now, plan, versions[model], first)
        kind = "routed" if plan.step is Step.NEW else "revision"
        text = f"job {job.pk}: {model} {versions[model]} revision {plan.revision} on {chosen}"
        if plan.step is Step.REVISE:
            text += f" ({plan.reason})"
        record_event(session, now, study_uid, kind, text, first.series_instance_uid)
    elif plan.step is Step.REPLACE:
        if not _replace_input(session, now, plan, first):
            raise _Changed
        text = f"{model}: now on {chosen} ({plan.reason})"
        record_event(session, now, study_uid, "routed", text, first.series_instance_uid)
    elif plan.step is Step.RECORD:
        text = f"{model}: {chosen} would now be chosen; {plan.reason}"
        record_event(session, now, study_uid, "late-data", text, first.series_instance_uid)


def record_routing(
    sessions: sessionmaker[Session],
    now: dt.datetime,
    plans: Sequence[PlannedJob],
    series: Sequence[SeriesDecision],
    versions: Mapping[str, str],
) -> bool:
    """Write one routing decision in one transaction: series states, jobs and history.

    Parameters
    ----------
    sessions:
        The session factory.
    now:
        The current time.
    plans:
        From :func:`~dicom_ai_node.assemble.revision.plan_job`: NEW and REVISE insert a
        job (revision, predecessor, input), REPLACE gives the queued job the new input,
        RECORD writes a history line, KEEP nothing.
    series:
        Each series' new state and reason; every series a plan names must be here.
    versions:
        Model name -> version (part of the job key).

    Returns
    -------
    bool
        ``False``, with nothing written, when a series or a queued job changed since it
        was read (the caller decides again on the next sweep).
    """
    by_uid = {d.seen.series_instance_uid: d.seen for d in series}
    try:
        with sessions.begin() as session:
            for decision in series:
                if not _decide_series(session, decision):
                    raise _Changed
                seen = decision.seen
                newly = decision.state is not seen.state
                if newly and decision.state is SeriesState.NOT_ROUTED:
                    record_event(
                        session,
                        now,
                        seen.study_instance_uid,
                        "not-routed",
                        decision.reason,
                        seen.series_instance_uid,
                    )
            for plan in plans:
                _apply(session, now, plan, versions, by_uid)
    except _Changed:
        return False
    return True
