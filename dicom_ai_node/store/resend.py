"""Store: an operator's re-sends: a result, or a job's results, back to the outbox.

A re-send puts a delivery row back to pending with no attempts, due now and retried for a
new window (made when the result never had one to that destination); a bulk retry of
failed deliveries does the same to each row that failed for good. Each raises the row's
``resends`` count, which fences out an attempt that was in flight meanwhile
(``store.outbox.finish_delivery_attempt``) and tells the send stage's metrics that the
row was not the node's own sending.

Only results that stand go again: those of a done (or quality-failed) job that no later
revision replaced or is about to replace. Sending superseded results after their
replacements would leave the receiver with the older findings last.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..domain import DeliveryState, JobState
from ..errors import Conflict, NotFound
from .db import write_lock
from .pauses import record_action, record_job_action
from .tables import Delivery, Job, Result, Study

__all__ = ["RETRY_BATCH", "resend", "retry_failed_deliveries"]

#: The most rows one bulk retry takes; the caller calls again for the rest.
RETRY_BATCH = 500
#: The states of a job whose results were recorded, and of a later revision that
#: replaces them (once it is done) or already did.
_MADE_RESULTS = (JobState.DONE.value, JobState.QUALITY_FAILED.value)
_REPLACING = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.DONE.value)


def _replacing_revision() -> ScalarSelect[int | None]:
    """The newest later revision of the job's model on its subject that replaces its
    results, or NULL (a subquery correlated with ``job``)."""
    later = aliased(Job)
    return (
        select(func.max(later.pk))
        .where(
            later.subject == Job.subject,
            later.model_name == Job.model_name,
            later.pk > Job.pk,
            later.state.in_(_REPLACING),
        )
        .scalar_subquery()
    )


def _refuse_unless_standing(session: Session, job: Job) -> None:
    """Raise Conflict when the job's results do not stand (see the module's text)."""
    state, replacing = session.execute(
        select(Job.state, _replacing_revision()).where(Job.pk == job.pk)
    ).one()
    if state not in _MADE_RESULTS:
        raise Conflict(
            f"job {job.pk} is {state} ({job.reason}): only standing results are sent again"
        )
    if replacing is not None:
        raise Conflict(
            f"job {job.pk} was revised by job {replacing}, whose results replace these: "
            "send that one's"
        )


def _put_back(
    session: Session,
    result_pk: int,
    destination: str,
    now: dt.datetime,
    window_s: float,
    *,
    failed_only: bool = False,
) -> bool:
    """The delivery of one result to one destination: pending, no attempts, due now, one
    more re-send; made when absent (unless ``failed_only``). False when nothing changed."""
    deadline = now + dt.timedelta(seconds=window_s)
    query = update(Delivery).where(
        Delivery.result_fk == result_pk, Delivery.destination == destination
    )
    if failed_only:
        query = query.where(Delivery.state == DeliveryState.FAILED.value)
    changed = session.execute(
        query.values(
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            deadline_at=deadline,
            delivered_at=None,
            resends=Delivery.resends + 1,
        ).execution_options(synchronize_session=False)
    )
    if changed.rowcount or failed_only:  # type: ignore[attr-defined]
        return bool(changed.rowcount)  # type: ignore[attr-defined]
    session.add(
        Delivery(
            result_fk=result_pk,
            destination=destination,
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            deadline_at=deadline,
            last_error="",
            resends=1,
        )
    )
    session.flush()
    return True


def _results_of(
    session: Session, result_pk: int | None, job_pk: int | None, kinds: Collection[str] | None
) -> tuple[Job, list[int]]:
    """The job (its row locked against a concurrent change) and the results to send:
    of the ``kinds`` the destination gets, when given."""
    if (result_pk is None) == (job_pk is None):
        raise ValueError("name either a result or a job")
    if result_pk is not None:
        result = session.get(Result, result_pk)
        if result is None:
            raise NotFound(f"no result {result_pk}")
        if kinds is not None and result.kind not in kinds:
            raise Conflict(f"the destination does not get {result.kind} results")
        job_pk, pks = result.job_fk, [result.pk]
    job = session.get(Job, job_pk, with_for_update=True)
    if job is None:
        raise NotFound(f"no job {job_pk}")
    if result_pk is None:
        of_job = select(Result.pk).where(Result.job_fk == job.pk)
        if kinds is not None:
            of_job = of_job.where(Result.kind.in_(list(kinds)))
        pks = list(session.scalars(of_job.order_by(Result.pk)))
        if not pks:
            raise Conflict(f"job {job.pk} ({job.state}) made no results to send")
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
    kinds: Collection[str] | None = None,
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
    kinds:
        The result kinds the destination gets (its ``results``); ``None`` sends every
        kind. A job's other results are left out; a single result of another kind is
        refused.

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
        When the job made no results (of those kinds), the result is of a kind the
        destination does not get, its results do not stand (superseded, or a later
        revision of it is queued or running), or the row changed meanwhile.
    """
    if not destination.strip():
        raise ValueError("name a destination (AE@HOST:PORT)")
    try:
        with sessions.begin() as session:
            write_lock(session)
            job, pks = _results_of(session, result_pk, job_pk, kinds)
            _refuse_unless_standing(session, job)
            for pk in pks:
                _put_back(session, pk, destination, now, window_s)
            what = f"result {result_pk}" if result_pk is not None else f"job {job_pk}"
            if result_pk is None:
                what += f" ({len(pks)} results)"
            record_job_action(session, now, "resend", user, f"{what} to {destination}", job)
            return len(pks)
    except IntegrityError as exc:  # its delivery was made meanwhile (by the job or a re-send)
        raise Conflict(f"the delivery to {destination} changed meanwhile: try again") from exc


def retry_failed_deliveries(
    session: Session,
    cause: str | None,
    user: str,
    now: dt.datetime,
    window_s: float,
    limit: int = RETRY_BATCH,
) -> int:
    """Send up to ``limit`` deliveries that failed for good again, oldest first, as
    :func:`resend` does; those of results that no longer stand are left as they are.

    Returns
    -------
    int
        How many went back to the outbox (fewer than ``limit``: none are left).
    """
    write_lock(session)
    query = (
        select(
            Delivery.result_fk,
            Delivery.destination,
            Result.sop_instance_uid,
            Study.study_instance_uid,
        )
        .join(Result, Delivery.result_fk == Result.pk)
        .join(Job, Result.job_fk == Job.pk)
        .join(Study, Job.study_fk == Study.pk)
        .where(
            Delivery.state == DeliveryState.FAILED.value,
            Job.state.in_(_MADE_RESULTS),
            _replacing_revision().is_(None),
        )
    )
    if cause is not None:
        query = query.where(Delivery.last_error == cause)
    count = 0
    rows = session.execute(query.order_by(Delivery.pk).limit(limit)).all()
    for result_pk, destination, sop_uid, study_uid in rows:
        if _put_back(session, result_pk, destination, now, window_s, failed_only=True):
            what = f"result {result_pk} ({sop_uid}) to {destination}"
            record_action(session, now, "retry", user, what, study_uid)
            count += 1
    return count
