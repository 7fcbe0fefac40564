"""Store: the per-study history an operator reads (``dicom-ai-node jobs``), UIDs only."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import DeliveryState
from .db import as_utc
from .tables import Delivery, Event, Job, Result, Series, Study

__all__ = ["study_report"]


def study_report(sessions: sessionmaker[Session], limit: int = 20) -> str:
    """Newest studies first: series states and reasons, jobs, deliveries and the history.

    No patient names or IDs are printed: the Study Instance UID identifies the study.
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
                duration = f", {j.duration_s:.1f} s" if j.duration_s is not None else ""
                lines.append(
                    f"  job {j.pk} {j.model_name} {j.model_version}: {j.state} "
                    f"(attempt {j.attempts}{duration}) - {j.reason}"
                )
                lines += _deliveries(session, j.pk)
            for e in session.scalars(
                select(Event)
                .where(Event.study_instance_uid == study.study_instance_uid)
                .order_by(Event.pk)
            ):
                lines.append(f"    {e.at:%Y-%m-%d %H:%M:%S} {e.kind}: {e.message}")
    return "\n".join(lines)


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
