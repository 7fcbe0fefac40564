"""Store: what an operator may do to jobs, deliveries, series, models and destinations.

Each action runs in one transaction, writes a line ``<action> by <user>: <object>`` of
kind ``action`` to the study's history, where the web timeline shows it
(:func:`~.pauses.record_action`), and returns what it changed. It raises
:class:`~dicom_ai_node.errors.NotFound` when the object does not exist and
:class:`~dicom_ai_node.errors.Conflict` when the action does not apply to the object's
state; the web stage turns them into 404 and 409 and writes the audit record. Pausing
and resuming models and destinations are in :mod:`.pauses` and answer here too.

A re-run is a new revision of the same model on the same subject and input, as the
assembler makes when better data arrives (``assemble.revision``): it names the job it
revises (its SR names the reports it replaces), and once it is done the earlier results
are superseded (``store.jobs.complete_job``). Only the latest job of a model on a
subject is re-run or retried, so a subject never gets two result sets.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..domain import DeliveryState, JobState, SeriesState, parse_enum
from ..errors import Conflict, NotFound
from .pauses import ACTION_EVENT, PauseInfo, PauseKind, pause, paused, pauses, record_action, resume
from .routing import job_key
from .tables import Delivery, Job, Result, Series, Study

__all__ = [
    "ACTION_EVENT",
    "PauseInfo",
    "PauseKind",
    "RetryKind",
    "cancel_job",
    "force_complete",
    "pause",
    "paused",
    "pauses",
    "record_action",
    "rerun_job",
    "resend",
    "resume",
    "retry_failed",
]

#: The job states a bulk retry takes (those the failures screen lists).
_FAILED = (JobState.FAILED.value, JobState.QUALITY_FAILED.value)
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


class RetryKind(enum.StrEnum):
    """What a bulk retry takes: failed jobs or failed deliveries."""

    JOBS = "jobs"
    DELIVERIES = "deliveries"


def _study_uid(session: Session, job: Job) -> str:
    return session.scalars(select(Study.study_instance_uid).where(Study.pk == job.study_fk)).one()


def _series_uid(session: Session, job: Job) -> str:
    uid = select(Series.series_instance_uid).where(Series.pk == job.series_fk)
    return session.scalars(uid).one()


def _job(session: Session, job_pk: int) -> Job:
    job = session.get(Job, job_pk)
    if job is None:
        raise NotFound(f"no job {job_pk}")
    return job


def _revised_by() -> ColumnElement[bool]:
    """A later job of the same model on the same subject exists (the job was revised)."""
    later = aliased(Job)
    return exists().where(
        later.subject == Job.subject, later.model_name == Job.model_name, later.pk > Job.pk
    )


def _later_job(session: Session, job: Job) -> int | None:
    return session.scalars(
        select(func.max(Job.pk)).where(
            Job.subject == job.subject, Job.model_name == job.model_name, Job.pk > job.pk
        )
    ).one()


def _new_revision(session: Session, job: Job, now: dt.datetime, reason: str) -> Job:
    """A queued revision of ``job`` (the latest of its subject and model) on its input."""
    latest = session.scalars(
        select(func.max(Job.revision)).where(
            Job.subject == job.subject, Job.model_name == job.model_name
        )
    ).one()
    revision = (latest if latest is not None else job.revision) + 1
    new = Job(
        job_key=job_key(job.model_name, job.model_version, job.subject, revision),
        study_fk=job.study_fk,
        series_fk=job.series_fk,
        model_name=job.model_name,
        model_version=job.model_version,
        generation=job.generation,
        state=JobState.QUEUED.value,
        reason=reason,
        explanation=dict(job.explanation or {}),
        attempts=0,
        created_at=now,
        updated_at=now,
        subject=job.subject,
        revision=revision,
        predecessor_fk=job.pk,
        input_key=job.input_key,
    )
    session.add(new)
    session.flush()
    return new


def rerun_job(sessions: sessionmaker[Session], job_pk: int, user: str, now: dt.datetime) -> int:
    """Run a job again as a new revision of the same model on the same subject and input.

    Parameters
    ----------
    sessions:
        The session factory.
    job_pk:
        The job; it must be the latest of its model on its subject and not queued or
        running.
    user:
        Who asked (for the history).
    now:
        The current time.

    Returns
    -------
    int
        The new job's key. Its job key names the next revision, so its results get new
        UIDs; once it is done, the earlier results are superseded.

    Raises
    ------
    NotFound
        When there is no such job.
    Conflict
        When the job is queued or running, or a later revision of it exists.
    """
    with sessions.begin() as session:
        job = _job(session, job_pk)
        if job.state in _UNFINISHED:
            raise Conflict(f"job {job_pk} is {job.state}: it runs already")
        later = _later_job(session, job)
        if later is not None:
            raise Conflict(f"job {job_pk} was revised by job {later}: re-run that one")
        new = _new_revision(session, job, now, f"re-run of job {job_pk} by {user}")
        what = f"job {job_pk} ({job.model_name}) as job {new.pk}, revision {new.revision}"
        record_action(
            session, now, "rerun", user, what, _study_uid(session, job), _series_uid(session, job)
        )
        return new.pk


def cancel_job(
    sessions: sessionmaker[Session], job_pk: int, user: str, now: dt.datetime
) -> JobState:
    """Cancel a queued or running job; returns the state it had.

    A cancelled job is never claimed; the worker running it finishes, but its final
    write is fenced out (``store.jobs``): it records no results and sends nothing.

    Raises
    ------
    NotFound
        When there is no such job.
    Conflict
        When the job has finished (done, failed, superseded or cancelled).
    """
    with sessions.begin() as session:
        job = _job(session, job_pk)
        was = JobState(job.state)
        changed = session.execute(
            update(Job)
            .where(Job.pk == job_pk, Job.state == was.value, Job.state.in_(_UNFINISHED))
            .values(
                state=JobState.CANCELLED.value,
                reason=f"cancelled by {user}",
                lease_until=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise Conflict(f"job {job_pk} is {was.value}: only queued or running jobs cancel")
        what = f"job {job_pk} ({job.model_name}, was {was.value})"
        record_action(
            session, now, "cancel", user, what, _study_uid(session, job), _series_uid(session, job)
        )
        return was


def _send_again(
    session: Session, result_pk: int, destination: str, now: dt.datetime, window_s: float
) -> None:
    """The delivery of one result to one destination: pending, no attempts, due now."""
    row = session.scalars(
        select(Delivery).where(Delivery.result_fk == result_pk, Delivery.destination == destination)
    ).first()
    deadline = now + dt.timedelta(seconds=window_s)
    if row is None:
        session.add(
            Delivery(
                result_fk=result_pk,
                destination=destination,
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                deadline_at=deadline,
                last_error="",
            )
        )
        return
    row.state = DeliveryState.PENDING.value
    row.attempts = 0
    row.next_attempt_at = now
    row.deadline_at = deadline
    row.delivered_at = None


def _results_of(
    session: Session, result_pk: int | None, job_pk: int | None
) -> tuple[Job, list[int]]:
    if (result_pk is None) == (job_pk is None):
        raise ValueError("name either a result or a job")
    if result_pk is not None:
        result = session.get(Result, result_pk)
        if result is None:
            raise NotFound(f"no result {result_pk}")
        return _job(session, result.job_fk), [result.pk]
    assert job_pk is not None
    job = _job(session, job_pk)
    pks = list(
        session.scalars(select(Result.pk).where(Result.job_fk == job_pk).order_by(Result.pk))
    )
    if not pks:
        raise Conflict(f"job {job_pk} ({job.state}) made no results to send")
    return job, pks


def resend(
    sessions: sessionmaker[Session],
    destination: str,
    user: str,
    now: dt.datetime,
    window_s: float,
    *,
    result_pk: int | None = None,
    job_pk: int | None = None,
) -> int:
    """Send a result, or every result of a job, to a destination again.

    The delivery row goes back to pending with no attempts, due now and retried for
    ``window_s`` (made when there was none). The same objects go again (their UIDs are
    fixed by the job), so a receiver that has them already keeps one copy.

    Parameters
    ----------
    destination:
        ``AE@HOST:PORT``; the caller checks it is one the node knows.
    window_s:
        The retry window (``send.retry_window_s``).
    result_pk, job_pk:
        Exactly one of them.

    Returns
    -------
    int
        How many results were queued.

    Raises
    ------
    ValueError
        When neither or both of ``result_pk`` and ``job_pk`` are given, or the
        destination is empty.
    NotFound
        When there is no such result or job.
    Conflict
        When the job made no results.
    """
    if not destination.strip():
        raise ValueError("name a destination (AE@HOST:PORT)")
    with sessions.begin() as session:
        job, pks = _results_of(session, result_pk, job_pk)
        for pk in pks:
            _send_again(session, pk, destination, now, window_s)
        what = (
            f"result {result_pk}" if result_pk is not None else f"job {job_pk} ({len(pks)} results)"
        )
        record_action(
            session,
            now,
            "resend",
            user,
            f"{what} to {destination}",
            _study_uid(session, job),
            _series_uid(session, job),
        )
        return len(pks)


def _retry_jobs(session: Session, cause: str | None, user: str, now: dt.datetime) -> int:
    """Failed jobs not revised since: a re-run when they made results, else queued again."""
    query = select(Job).where(Job.state.in_(_FAILED), ~_revised_by()).order_by(Job.pk)
    if cause is not None:
        query = query.where(Job.reason == cause)
    count = 0
    for job in session.scalars(query).all():
        study_uid, series_uid = _study_uid(session, job), _series_uid(session, job)
        made = session.scalars(select(Result.pk).where(Result.job_fk == job.pk)).first()
        if made is not None:
            new = _new_revision(session, job, now, f"retry of job {job.pk} by {user}")
            what = f"job {job.pk} ({job.model_name}) as job {new.pk}, revision {new.revision}"
        else:
            session.execute(
                update(Job)
                .where(Job.pk == job.pk, Job.state == job.state)
                .values(
                    state=JobState.QUEUED.value,
                    attempts=0,
                    lease_until=None,
                    reason=f"retry by {user}",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            what = f"job {job.pk} ({job.model_name}, was {job.state})"
        record_action(session, now, "retry", user, what, study_uid, series_uid)
        count += 1
    return count


def _retry_deliveries(
    session: Session, cause: str | None, user: str, now: dt.datetime, window_s: float
) -> int:
    query = (
        select(Delivery, Result.sop_instance_uid, Study.study_instance_uid)
        .join(Result, Delivery.result_fk == Result.pk)
        .join(Job, Result.job_fk == Job.pk)
        .join(Study, Job.study_fk == Study.pk)
        .where(Delivery.state == DeliveryState.FAILED.value)
        .order_by(Delivery.pk)
    )
    if cause is not None:
        query = query.where(Delivery.last_error == cause)
    rows = session.execute(query).all()
    for delivery, sop_uid, study_uid in rows:
        _send_again(session, delivery.result_fk, delivery.destination, now, window_s)
        what = f"result {delivery.result_fk} ({sop_uid}) to {delivery.destination}"
        record_action(session, now, "retry", user, what, study_uid)
    return len(rows)


def retry_failed(
    sessions: sessionmaker[Session],
    kind: str | RetryKind,
    cause: str | None,
    user: str,
    now: dt.datetime,
    window_s: float,
) -> int:
    """Try every failure of one kind again, or those of one cause; returns how many.

    Parameters
    ----------
    kind:
        ``jobs``: failed and quality-failed jobs that no later revision replaced go back
        to the queue with no attempts (a new revision when they made results);
        ``deliveries``: deliveries failed for good are sent again, as :func:`resend`.
    cause:
        Only those whose reason (a job's) or last error (a delivery's) is exactly this,
        as the failures screen groups them; None for all.
    window_s:
        The retry window of the deliveries (``send.retry_window_s``).

    Raises
    ------
    ValueError
        When ``kind`` is neither.
    """
    kind = parse_enum(RetryKind, kind)
    with sessions.begin() as session:
        if kind is RetryKind.JOBS:
            return _retry_jobs(session, cause, user, now)
        return _retry_deliveries(session, cause, user, now, window_s)


def force_complete(
    sessions: sessionmaker[Session],
    user: str,
    now: dt.datetime,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
) -> list[str]:
    """Mark a receiving series, or every receiving series of a study, complete now.

    As the completion sweep does (``store.index.complete_series``), with the reason
    ``forced complete by <user>``; routing then takes them on its next sweep.

    Returns
    -------
    list[str]
        The Series Instance UIDs completed.

    Raises
    ------
    ValueError
        When neither or both UIDs are given.
    NotFound
        When there is no such series or study.
    Conflict
        When the series (or every series of the study) is no longer receiving.
    """
    if (series_uid is None) == (study_uid is None):
        raise ValueError("name either a series or a study")
    with sessions.begin() as session:
        query = select(Series, Study.study_instance_uid).join(Study, Series.study_fk == Study.pk)
        if series_uid is not None:
            query, what = (
                query.where(Series.series_instance_uid == series_uid),
                f"series {series_uid}",
            )
        else:
            query, what = query.where(Study.study_instance_uid == study_uid), f"study {study_uid}"
        rows = session.execute(query.order_by(Series.pk)).all()
        if not rows:
            raise NotFound(f"no {what}")
        done = []
        for series, study in rows:
            changed = session.execute(
                update(Series)
                .where(Series.pk == series.pk, Series.state == SeriesState.RECEIVING.value)
                .values(
                    state=SeriesState.COMPLETE.value,
                    completed_at=now,
                    reason=f"forced complete by {user}",
                )
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount:  # type: ignore[attr-defined]
                uid = series.series_instance_uid
                record_action(session, now, "force-complete", user, f"series {uid}", study, uid)
                done.append(uid)
        if not done:
            raise Conflict(f"{what} is not receiving: nothing to complete")
        return done
