"""Store: what the audit trail reads (PS3.15 A.5.3.7): studies received and delivered.

Each answer groups instances per study and peer, with the SOP classes and how many
instances of each, and the Patient ID the audit message requires. These rows never go
into a log record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import SeriesState
from .tables import Delivery, Instance, Job, Patient, Result, Series, Study

__all__ = ["StudyTransfer", "delivered_studies", "last_instance_pk", "received_after"]


@dataclass(frozen=True)
class StudyTransfer:
    """Instances of one study moved between the node and one peer.

    Attributes
    ----------
    peer:
        The calling AE title (received) or the destination ``AE@HOST:PORT`` (delivered).
    sop_classes:
        ``(SOP Class UID, number of instances)``, sorted by UID.
    """

    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    peer: str
    sop_classes: tuple[tuple[str, int], ...]


def _group(
    rows: Sequence[tuple[str, str, str, str, str]],
) -> list[StudyTransfer]:
    """(study, patient ID, issuer, peer, SOP class) rows -> one transfer per study and peer."""
    counts: dict[tuple[str, str, str, str], Counter[str]] = {}
    for study, patient_id, issuer, peer, sop_class in rows:
        counts.setdefault((study, patient_id, issuer, peer), Counter())[sop_class] += 1
    return [
        StudyTransfer(study, patient_id, issuer, peer, tuple(sorted(classes.items())))
        for (study, patient_id, issuer, peer), classes in counts.items()
    ]


def last_instance_pk(sessions: sessionmaker[Session]) -> int:
    """The newest instance row's key (0 when none): where auditing starts on a new log."""
    with sessions() as session:
        return int(session.scalar(select(func.max(Instance.pk))) or 0)


def received_after(
    sessions: sessionmaker[Session], after_pk: int, limit: int = 10000
) -> tuple[list[StudyTransfer], int]:
    """Instances indexed after ``after_pk`` whose series is no longer receiving.

    Rows are taken in key order and only up to the first one whose series still receives
    (its quiet period is not over), so that everything up to the returned key is reported
    exactly once, a study in one message per peer as far as possible.

    Returns
    -------
    tuple[list[StudyTransfer], int]
        The studies received, and the key to continue after.
    """
    with sessions() as session:
        rows = session.execute(
            select(
                Instance.pk,
                Series.state,
                Study.study_instance_uid,
                Patient.patient_id,
                Patient.issuer_of_patient_id,
                Instance.calling_ae_title,
                Instance.sop_class_uid,
            )
            .join(Series, Instance.series_fk == Series.pk)
            .join(Study, Series.study_fk == Study.pk)
            .join(Patient, Study.patient_fk == Patient.pk)
            .where(Instance.pk > after_pk)
            .order_by(Instance.pk)
            .limit(limit)
        ).all()
    taken: list[tuple[str, str, str, str, str]] = []
    last = after_pk
    for pk, state, study, patient_id, issuer, calling, sop_class in rows:
        if state == SeriesState.RECEIVING.value:
            break
        taken.append((study, patient_id, issuer, calling, sop_class))
        last = pk
    return _group(taken), last


def delivered_studies(
    sessions: sessionmaker[Session], delivery_pks: Sequence[int]
) -> list[StudyTransfer]:
    """The studies of these deliveries, grouped per study and destination."""
    if not delivery_pks:
        return []
    with sessions() as session:
        rows = session.execute(
            select(
                Study.study_instance_uid,
                Patient.patient_id,
                Patient.issuer_of_patient_id,
                Delivery.destination,
                Result.sop_class_uid,
            )
            .join(Result, Delivery.result_fk == Result.pk)
            .join(Job, Result.job_fk == Job.pk)
            .join(Study, Job.study_fk == Study.pk)
            .join(Patient, Study.patient_fk == Patient.pk)
            .where(Delivery.pk.in_(list(delivery_pks)))
            .order_by(Delivery.pk)
        ).all()
    return _group([(study, pid, issuer, dest, cls) for study, pid, issuer, dest, cls in rows])
