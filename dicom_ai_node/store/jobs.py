"""Store: jobs and their results (the only SQL for those tables; the outbox is ``outbox``).

Jobs are claimed with a lease (``lease_until``) that the worker renews while the job
runs (:func:`renew_lease`, its heartbeat); a job whose lease ran out is claimed again,
so a crashed or frozen worker's job is not lost, up to :data:`MAX_JOB_ATTEMPTS` times,
so that a job that takes the node down each time it runs ends as failed instead of
looping. Each claim counts an attempt, and the attempt number fences the claim: a
worker whose job was taken over (or re-queued by a restart) can neither renew, complete
nor fail it any more. The same fence keeps out the worker of a job an operator cancelled
(``store.actions.cancel_job``): a cancelled job is never claimed, and its running
worker's final write changes nothing. Jobs of a paused model wait (``store.actions.pause``).
Completing a job writes its outbox rows in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..domain import DeliveryState, JobState
from .db import as_utc
from .index import record_event
from .tables import Delivery, Instance, Job, Pause, Result, Series, Study

__all__ = [
    "ClaimedJob",
    "NewResult",
    "claim_job",
    "complete_job",
    "fail_job",
    "instance_paths",
    "renew_lease",
    "replaced_reports",
    "requeue_running_jobs",
]


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker now holds."""

    pk: int
    job_key: str
    model_name: str
    model_version: str
    study_instance_uid: str
    series_instance_uid: str
    series_pk: int
    calling_ae_title: str
    attempts: int
    created_at: dt.datetime
    #: When it last went into the queue: made, retried by an operator, or re-queued by a
    #: restart (the job's ``updated_at`` as the claim found it); its queue wait starts here.
    queued_at: dt.datetime
    subject: str = ""
    revision: int = 0
    predecessor_pk: int | None = None


@dataclass(frozen=True)
class NewResult:
    """A result object written to disk, to be indexed with its job."""

    kind: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    path: str


#: Times a job is started before it is failed (each start that did not finish means the
#: worker or the node stopped while running it).
MAX_JOB_ATTEMPTS = 3


def claim_job(
    sessions: sessionmaker[Session],
    now: dt.datetime,
    lease_s: float,
    model_names: Sequence[str],
    max_attempts: int = MAX_JOB_ATTEMPTS,
) -> ClaimedJob | None:
    """Take the oldest queued job (or one whose lease expired) for one of these models.

    A job already started ``max_attempts`` times is failed instead, with the reason
    (shown by ``dicom-ai-node jobs``), and the next one is looked at. Jobs of a model an
    operator paused are left queued; cancelled jobs are never taken.
    """
    predecessor = aliased(Job)
    unfinished = [JobState.QUEUED.value, JobState.RUNNING.value]
    with sessions.begin() as session:
        candidates = session.execute(
            select(
                Job, Series.series_instance_uid, Series.calling_ae_title, Study.study_instance_uid
            )
            .join(Series, Job.series_fk == Series.pk)
            .join(Study, Job.study_fk == Study.pk)
            .where(
                Job.model_name.in_(model_names),
                or_(
                    Job.state == JobState.QUEUED.value,
                    (Job.state == JobState.RUNNING.value) & (Job.lease_until < now),
                ),
                # a revision runs after the job it revises, so its SR can name that one's
                ~exists().where(
                    predecessor.pk == Job.predecessor_fk, predecessor.state.in_(unfinished)
                ),
                ~exists().where(Pause.kind == "model", Pause.name == Job.model_name),
            )
            .order_by(Job.pk)
            .limit(5)
        ).all()
        for job, series_uid, calling, study_uid in candidates:
            if job.attempts >= max_attempts:
                _give_up(session, job, study_uid, series_uid, now)
                continue
            # read before the UPDATE: the session then refreshes ``job`` with the new values
            attempts, state, queued_at = job.attempts + 1, job.state, as_utc(job.updated_at)
            taken = session.execute(
                update(Job)
                .where(Job.pk == job.pk, Job.state == state, Job.attempts == attempts - 1)
                .values(
                    state=JobState.RUNNING.value,
                    lease_until=now + dt.timedelta(seconds=lease_s),
                    attempts=attempts,
                    updated_at=now,
                )
            )
            if taken.rowcount:  # type: ignore[attr-defined]
                return ClaimedJob(
                    pk=job.pk,
                    job_key=job.job_key,
                    model_name=job.model_name,
                    model_version=job.model_version,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    series_pk=job.series_fk,
                    calling_ae_title=calling,
                    attempts=attempts,
                    created_at=as_utc(job.created_at),
                    queued_at=queued_at,
                    subject=job.subject,
                    revision=job.revision,
                    predecessor_pk=job.predecessor_fk,
                )
    return None


def _give_up(session: Session, job: Job, study_uid: str, series_uid: str, now: dt.datetime) -> None:
    reason = (
        f"gave up after {job.attempts} starts that did not finish "
        "(the node or its worker stopped while running it each time)"
    )
    session.execute(
        update(Job)
        .where(Job.pk == job.pk, Job.attempts == job.attempts)
        .values(state=JobState.FAILED.value, reason=reason, lease_until=None, updated_at=now)
    )
    record_event(session, now, study_uid, "job-failed", f"{job.model_name}: {reason}", series_uid)


def _still_held(job: ClaimedJob) -> tuple[ColumnElement[bool], ...]:
    """The job is still running under this claim (the fence of every write by its worker)."""
    return (Job.pk == job.pk, Job.state == JobState.RUNNING.value, Job.attempts == job.attempts)


def renew_lease(
    sessions: sessionmaker[Session], job: ClaimedJob, now: dt.datetime, lease_s: float
) -> bool:
    """Extend the lease of a running job to ``now + lease_s`` (the worker's heartbeat).

    Returns
    -------
    bool
        ``False`` when the job is no longer held by this claim: its lease ran out and
        another worker took it, or a restart re-queued it.
    """
    with sessions.begin() as session:
        result = session.execute(
            update(Job)
            .where(*_still_held(job))
            .values(lease_until=now + dt.timedelta(seconds=lease_s))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def replaced_reports(sessions: sessionmaker[Session], predecessor_pk: int | None) -> list[str]:
    """Relative paths of the SR documents a revision replaces (PS3.3 C.17.2.3).

    Those of the job it revises and of each job that one revises in turn, back to the
    last one whose results stood (DONE or SUPERSEDED); a FAILED job made none.
    """
    paths: list[str] = []
    seen: set[int] = set()
    with sessions() as session:
        pk = predecessor_pk
        while pk is not None and pk not in seen:
            seen.add(pk)
            job = session.get(Job, pk)
            if job is None:
                break
            paths += session.scalars(
                select(Result.path)
                .where(Result.job_fk == pk, Result.kind == "SR")
                .order_by(Result.pk)
            )
            if job.state in (JobState.DONE.value, JobState.SUPERSEDED.value):
                break
            pk = job.predecessor_fk
    return paths


def instance_paths(sessions: sessionmaker[Session], series_pk: int) -> list[str]:
    """Relative paths of every instance of a series."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Instance.path).where(Instance.series_fk == series_pk).order_by(Instance.pk)
            )
        )


def complete_job(
    sessions: sessionmaker[Session],
    job: ClaimedJob,
    now: dt.datetime,
    state: JobState,
    reason: str,
    results: Sequence[NewResult],
    destinations: Sequence[str] | Mapping[str, Collection[str]],
    retry_window_s: float,
    duration_s: float,
) -> bool:
    """Record a job's results and queue their deliveries, in one transaction.

    Earlier jobs of the same model on the same subject (earlier revisions, and the job
    this one revises) become SUPERSEDED: all of them when this job is DONE, only those
    that could not analyse their input either when it is QUALITY_FAILED. The result
    files are already durable (written before this call), so the commit publishes them
    and their outbox rows at once; a crash before it leaves the job to run again (same
    UIDs, same file names).

    Parameters
    ----------
    destinations:
        Where the results go: each destination with the result kinds it gets (its
        ``results``: a row per result whose ``kind`` it names), or a plain sequence of
        destinations that get every result.

    Returns
    -------
    bool
        ``False``, and nothing written, when the claim no longer holds the job (taken
        over after its lease ran out, or re-queued): the run holding it records it.
    """
    with sessions.begin() as session:
        kept = session.execute(
            update(Job)
            .where(*_still_held(job))
            .values(
                state=state.value,
                reason=reason,
                lease_until=None,
                updated_at=now,
                duration_s=duration_s,
            )
        )
        if not kept.rowcount:  # type: ignore[attr-defined]
            return False
        for res in results:
            row = session.scalars(
                select(Result).where(Result.sop_instance_uid == res.sop_instance_uid)
            ).one_or_none()
            if row is None:  # a re-run of the same job makes the same UIDs: keep one row
                row = Result(job_fk=job.pk, created_at=now, **res.__dict__)
                session.add(row)
                session.flush()
            for dest in destinations:
                if isinstance(destinations, Mapping) and res.kind not in destinations[dest]:
                    continue
                exists = session.scalars(
                    select(Delivery.pk).where(
                        Delivery.result_fk == row.pk, Delivery.destination == dest
                    )
                ).first()
                if exists is None:
                    session.add(
                        Delivery(
                            result_fk=row.pk,
                            destination=dest,
                            state=DeliveryState.PENDING.value,
                            attempts=0,
                            next_attempt_at=now,
                            deadline_at=now + dt.timedelta(seconds=retry_window_s),
                            last_error="",
                        )
                    )
        # results replace results; a revision that could not analyse its input leaves the
        # earlier results standing (it replaces only earlier failures to analyse)
        replaced = [JobState.QUEUED.value, JobState.QUALITY_FAILED.value]
        if state is JobState.DONE:
            replaced.append(JobState.DONE.value)
        earlier = (Job.subject == job.subject) & (Job.model_name == job.model_name)
        if job.predecessor_pk is not None:  # also one made before subjects existed
            earlier = earlier | (Job.pk == job.predecessor_pk)
        superseded = session.execute(
            update(Job)
            .where(earlier, Job.pk < job.pk, Job.state.in_(replaced))
            .values(
                state=JobState.SUPERSEDED.value,
                reason=f"superseded by job {job.pk}",
                updated_at=now,
            )
        )
        kinds = ", ".join(r.kind for r in results) or "no objects"
        record_event(
            session,
            now,
            job.study_instance_uid,
            f"job-{state.value}",
            f"job {job.pk} {job.model_name} {job.model_version}: {reason} ({kinds}; "
            f"to {', '.join(destinations) or 'no destination'})",
            job.series_instance_uid,
        )
        if superseded.rowcount:  # type: ignore[attr-defined]
            record_event(
                session,
                now,
                job.study_instance_uid,
                "superseded",
                f"{superseded.rowcount} earlier job(s) superseded by job {job.pk}",  # type: ignore[attr-defined]
                job.series_instance_uid,
            )
    return True


def fail_job(
    sessions: sessionmaker[Session], job: ClaimedJob, now: dt.datetime, reason: str
) -> bool:
    """Mark a job FAILED with the reason the operator will read.

    Returns
    -------
    bool
        ``False``, and nothing written, when the claim no longer holds the job.
    """
    with sessions.begin() as session:
        kept = session.execute(
            update(Job)
            .where(*_still_held(job))
            .values(state=JobState.FAILED.value, reason=reason, lease_until=None, updated_at=now)
        )
        if not kept.rowcount:  # type: ignore[attr-defined]
            return False
        record_event(
            session,
            now,
            job.study_instance_uid,
            "job-failed",
            f"job {job.pk} {job.model_name}: {reason}",
            job.series_instance_uid,
        )
    return True


def requeue_running_jobs(sessions: sessionmaker[Session], now: dt.datetime) -> int:
    """At start-up of a single-process node, jobs left RUNNING by a crash go back to QUEUED.

    Their attempt counts stay, so a job that takes the node down every time still ends
    failed; the next claim counts a new attempt, which fences out the dead run.
    """
    with sessions.begin() as session:
        result = session.execute(
            update(Job)
            .where(Job.state == JobState.RUNNING.value)
            .values(state=JobState.QUEUED.value, lease_until=None, updated_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
