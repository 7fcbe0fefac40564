"""Store: the per-study history an operator reads (``dicom-ai-node jobs``), UIDs only."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import DeliveryState
from ..log import escape_controls
from .db import as_utc
from .tables import Delivery, Event, Job, Result, Series, Study

__all__ = ["study_report"]


def study_report(sessions: sessionmaker[Session], limit: int = 20) -> str:
    """Newest studies first: series states and reasons, jobs, deliveries and the history.

    No patient names or IDs are printed: the Study Instance UID identifies the study.
    Control characters in what a peer sent (descriptions) are printed escaped.
    """
    lines: list[str] = []
    with sessions() as session:
        studies = session.scalars(select(Study).order_by(Study.pk.desc()).limit(limit)).all()
        if not studies:
            return "no studies received yet"
        for study in studies:
            lines.append(f"study {study.study_instance_uid} (date {study.study_date or '-'})")
            for s in session.scalars(
                select(Series).where(Series.study_fk == study.pk).order_by(Series.pk)
            ):
                lines.append(
                    f"  series {s.series_instance_uid} {s.modality} #{s.series_number} "
                    f"'{s.series_description}': {s.instance_count} instance(s), {s.state}"
                    + (f" - {s.reason}" if s.reason else "")
                )
            for j in session.scalars(select(Job).where(Job.study_fk == study.pk).order_by(Job.pk)):
                lines += _job(j)
                lines += _deliveries(session, j.pk)
            for e in session.scalars(
                select(Event)
                .where(Event.study_instance_uid == study.study_instance_uid)
                .order_by(Event.pk)
            ):
                lines.append(f"    {e.at:%Y-%m-%d %H:%M:%S} {e.kind}: {e.message}")
    # descriptions, reasons and history hold text a peer sent: no control character of
    # theirs reaches the operator's terminal (CWE-150)
    return "\n".join(escape_controls(line) for line in lines)


def _job(job: Job) -> list[str]:
    """A job: model, revision, state and reason, then the series it runs on and why those."""
    duration = f", {job.duration_s:.1f} s" if job.duration_s is not None else ""
    revision = f" revision {job.revision}" if job.revision else ""
    if job.predecessor_fk is not None:
        revision += f" (revises job {job.predecessor_fk})"
    lines = [
        f"  job {job.pk} {job.model_name} {job.model_version}{revision}: {job.state} "
        f"(attempt {job.attempts}{duration}) - {job.reason}"
    ]
    explanation = job.explanation or {}
    series = explanation.get("series") or []
    if series:
        lines.append(f"    on {job.subject or 'series'}: series {', '.join(series)}")
    lines += [f"    {line}" for line in explanation.get("selection") or []]
    return lines


def _deliveries(session: Session, job_pk: int) -> list[str]:
    """A job's results per destination and state; why and until when those not delivered wait."""
    rows = session.execute(
        select(
            Delivery.destination,
            Delivery.state,
            func.count(),
            func.max(Delivery.attempts),
            func.min(Delivery.next_attempt_at),
            func.max(Delivery.last_error),
        )
        .join(Result, Delivery.result_fk == Result.pk)
        .where(Result.job_fk == job_pk)
        .group_by(Delivery.destination, Delivery.state)
        .order_by(Delivery.destination, Delivery.state)
    ).all()
    lines = []
    for dest, state, n, attempts, next_at, error in rows:
        line = f"    {n} result(s) to {dest}: {state}"
        if state == DeliveryState.PENDING.value and attempts:
            line += (
                f", {attempts} attempt(s), next {as_utc(next_at):%Y-%m-%d %H:%M:%S} UTC - {error}"
            )
        elif state == DeliveryState.FAILED.value:
            line += f" after {attempts} attempt(s), retry window over - {error}"
        lines.append(line)
    return lines
