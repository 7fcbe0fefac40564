"""Store: what an operator may do to jobs, deliveries, series, models and destinations.

Each action runs in one transaction, writes a line ``<action> by <user>: <object>`` of
kind ``action`` to the study's history, where the web timeline shows it
(:func:`~.pauses.record_action`), and returns what it changed. It raises
:class:`~dicom_ai_node.errors.NotFound` when the object does not exist and
:class:`~dicom_ai_node.errors.Conflict` when the action does not apply to the object's
state; the web stage turns them into 404 and 409 and writes the audit record. Pausing
and resuming models and destinations are in :mod:`.pauses`, re-sending results in
:mod:`.resend`; they answer here too.

A re-run is a new revision of the same model on the same subject and input, as the
assembler makes when better data arrives (``assemble.revision``): it names the job it
revises (its SR names the reports it replaces), and once it is done the earlier results
are superseded (``store.jobs.complete_job``). Only the latest job of a model on a
subject is re-run or retried, so a subject never gets two result sets. The actions
that make a revision decide under a write lock (:func:`~.db.write_lock`, the job's row
on PostgreSQL), and one that loses a race all the same raises Conflict.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..domain import JobState, SeriesState, parse_enum
from ..errors import Conflict, NotFound
from .db import write_lock
from .pauses import (
    ACTION_EVENT,
    PauseInfo,
    PauseKind,
    pause,
    paused,
    pauses,
    record_action,
    record_job_action,
    resume,
)
from .resend import RETRY_BATCH, resend, retry_failed_deliveries
from .routing import job_key
from .tables import Job, Result, Series, Study

__all__ = [
    "ACTION_EVENT",
    "RETRY_BATCH",
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


def _job(session: Session, job_pk: int, *, lock: bool = False) -> Job:
    """The job, or NotFound; ``lock``: its row locked until the commit (PostgreSQL)."""
    job = session.get(Job, job_pk, with_for_update=lock)
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
        When the job is queued or running, or a later revision of it exists, also one
        made meanwhile (another re-run, a retry, the assembler's revision).
    """
    try:
        with sessions.begin() as session:
            write_lock(session)
            job = _job(session, job_pk, lock=True)
            if job.state in _UNFINISHED:
                raise Conflict(f"job {job_pk} is {job.state}: it runs already")
            later = _later_job(session, job)
            if later is not None:
                raise Conflict(f"job {job_pk} was revised by job {later}: re-run that one")
            new = _new_revision(session, job, now, f"re-run of job {job_pk} by {user}")
            what = f"job {job_pk} ({job.model_name}) as job {new.pk}, revision {new.revision}"
            record_job_action(session, now, "rerun", user, what, job)
            return new.pk
    except IntegrityError as exc:  # the same revision was made meanwhile
        raise Conflict(f"job {job_pk} was revised meanwhile: re-run the new revision") from exc


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
        record_job_action(session, now, "cancel", user, what, job)
        return was


def _retry_jobs(
    session: Session, cause: str | None, user: str, now: dt.datetime, limit: int
) -> int:
    """Up to ``limit`` failed jobs not revised since, oldest first: a re-run when they made
    results, else queued again."""
    write_lock(session)
    query = select(Job).where(Job.state.in_(_FAILED), ~_revised_by())
    if cause is not None:
        query = query.where(Job.reason == cause)
    count = 0
    for job in session.scalars(query.order_by(Job.pk).limit(limit).with_for_update()).all():
        if _later_job(session, job) is not None:
            continue  # revised after the query's snapshot, before its row lock (PostgreSQL)
        made = session.scalars(select(Result.pk).where(Result.job_fk == job.pk)).first()
        if made is not None:
            new = _new_revision(session, job, now, f"retry of job {job.pk} by {user}")
            what = f"job {job.pk} ({job.model_name}) as job {new.pk}, revision {new.revision}"
        else:
            # read before the UPDATE: the session then refreshes ``job`` with the new values
            was = job.state
            queued = session.execute(
                update(Job)
                .where(Job.pk == job.pk, Job.state == was)
                .values(
                    state=JobState.QUEUED.value,
                    attempts=0,
                    lease_until=None,
                    reason=f"retry by {user}",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if not queued.rowcount:  # type: ignore[attr-defined]
                continue  # changed since it was read: not this batch's
            what = f"job {job.pk} ({job.model_name}, was {was})"
        record_job_action(session, now, "retry", user, what, job)
        count += 1
    return count


def retry_failed(
    sessions: sessionmaker[Session],
    kind: str | RetryKind,
    cause: str | None,
    user: str,
    now: dt.datetime,
    window_s: float,
    limit: int = RETRY_BATCH,
) -> int:
    """Try failures of one kind again, or those of one cause, a batch at a time.

    Parameters
    ----------
    kind:
        ``jobs``: failed and quality-failed jobs that no later revision replaced go back
        to the queue with no attempts (a new revision when they made results);
        ``deliveries``: deliveries failed for good are sent again, as :func:`resend`
        (not those of results that no longer stand).
    cause:
        Only those whose reason (a job's) or last error (a delivery's) is exactly this,
        as the failures screen groups them; None for all.
    window_s:
        The retry window of the deliveries (``send.retry_window_s``).
    limit:
        The most taken in one call (one transaction), oldest first.

    Returns
    -------
    int
        How many were taken; the caller calls again while it is ``limit``.

    Raises
    ------
    ValueError
        When ``kind`` is neither.
    Conflict
        When a job was revised meanwhile (nothing of this batch is retried).
    """
    kind = parse_enum(RetryKind, kind)
    try:
        with sessions.begin() as session:
            if kind is RetryKind.JOBS:
                return _retry_jobs(session, cause, user, now, limit)
            return retry_failed_deliveries(session, cause, user, now, window_s, limit)
    except IntegrityError as exc:  # a revision the batch makes was made meanwhile
        raise Conflict("a failed job was revised meanwhile: nothing retried, try again") from exc


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
