"""Store: what the operator's lists and details share: keyset pages, study and job rows.

Every reader returns frozen values, never ORM rows. Patient names, IDs and birth dates
are read only when the caller asks for them (``with_patient=True``, the operator and
admin roles); otherwise no patient column is selected at all. Lists are newest first
with keyset pagination: the opaque cursor names the last primary key shown, so a page
stays right while new rows arrive.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..domain import DeliveryState, JobState, SeriesState
from .db import as_utc
from .tables import Delivery, Job, Patient, Result, Series, Study

__all__ = [
    "MAX_PAGE",
    "BadCursor",
    "DeliveryCounts",
    "JobBrief",
    "JobSummary",
    "Page",
    "PatientDetails",
    "StudySummary",
    "decode_cursor",
    "encode_cursor",
    "job_rows",
    "job_summaries",
    "page_of",
    "page_size",
    "study_date_bound",
    "study_summaries",
]

T = TypeVar("T")

#: The most rows one page holds, whatever the caller asks for.
MAX_PAGE = 500
_DATE = re.compile(r"^[0-9]{8}$")


class BadCursor(ValueError):
    """A cursor this module did not make (or made for another list)."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the cursor of the next one (``None`` on the last page)."""

    items: tuple[T, ...]
    next_cursor: str | None


def encode_cursor(kind: str, pk: int) -> str:
    """The opaque cursor after the row ``pk`` of list ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}:{pk}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The primary key a cursor of list ``kind`` names.

    Raises
    ------
    BadCursor
        When ``cursor`` was not made by :func:`encode_cursor` for ``kind``.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("invalid cursor") from exc
    prefix, _, number = text.partition(":")
    if prefix != kind or not number.isdigit() or len(number) > 18:
        raise BadCursor("invalid cursor")
    return int(number)


def page_size(limit: int) -> int:
    """``limit`` within 1..:data:`MAX_PAGE`."""
    return max(1, min(int(limit), MAX_PAGE))


def page_of(kind: str, rows: Sequence[T], limit: int, pk_of: Callable[[T], int]) -> Page[T]:
    """The first ``limit`` of ``rows`` (one more was read to know whether more follow)."""
    shown = tuple(rows[:limit])
    if len(rows) <= limit or not shown:
        return Page(shown, None)
    return Page(shown, encode_cursor(kind, pk_of(shown[-1])))


def study_date_bound(value: str | None, name: str) -> str | None:
    """A StudyDate filter bound (``YYYYMMDD``), or ``None`` for none; raises ValueError."""
    if value is None or value == "":
        return None
    if not _DATE.match(value):
        raise ValueError(f"{name} must be a date as YYYYMMDD, not {value!r}")
    return value


# -- studies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientDetails:
    """Who a study is of: only for roles allowed to see patient data (operator, admin)."""

    patient_name: str
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: str


@dataclass(frozen=True)
class JobBrief:
    """A job as a study row names it."""

    pk: int
    model_name: str
    revision: int
    state: JobState


@dataclass(frozen=True)
class StudySummary:
    """One study in the studies list.

    Attributes
    ----------
    patient:
        ``None`` unless asked for with ``with_patient=True``.
    series_receiving:
        Series of the study still receiving instances.
    calling_ae_titles:
        The AE titles that sent its series, sorted.
    jobs:
        Every job of the study, oldest first.
    """

    pk: int
    study_instance_uid: str
    study_date: str
    study_description: str
    accession_number: str
    created_at: dt.datetime
    last_received_at: dt.datetime | None
    series_count: int
    series_receiving: int
    instance_count: int
    modalities: tuple[str, ...]
    calling_ae_titles: tuple[str, ...]
    jobs: tuple[JobBrief, ...]
    patient: PatientDetails | None


def study_summaries(
    session: Session, studies: Sequence[Study], with_patient: bool
) -> list[StudySummary]:
    """The list rows of these studies, in their order (three queries for the lot)."""
    pks = [s.pk for s in studies]
    series: dict[int, list[Any]] = defaultdict(list)
    for row in session.execute(
        select(
            Series.study_fk,
            Series.modality,
            Series.calling_ae_title,
            Series.instance_count,
            Series.last_received_at,
            Series.state,
        )
        .where(Series.study_fk.in_(pks))
        .order_by(Series.pk)
    ):
        series[row[0]].append(row)
    jobs: dict[int, list[JobBrief]] = defaultdict(list)
    for study_fk, pk, name, revision, state in session.execute(
        select(Job.study_fk, Job.pk, Job.model_name, Job.revision, Job.state)
        .where(Job.study_fk.in_(pks))
        .order_by(Job.pk)
    ):
        jobs[study_fk].append(JobBrief(pk, name, revision, JobState(state)))
    patients = _patients(session, studies) if with_patient else {}
    out = []
    for study in studies:
        mine = series[study.pk]
        last = max((as_utc(r.last_received_at) for r in mine), default=None)
        out.append(
            StudySummary(
                pk=study.pk,
                study_instance_uid=study.study_instance_uid,
                study_date=study.study_date,
                study_description=study.study_description,
                accession_number=study.accession_number,
                created_at=as_utc(study.created_at),
                last_received_at=last,
                series_count=len(mine),
                series_receiving=sum(r.state == SeriesState.RECEIVING.value for r in mine),
                instance_count=sum(r.instance_count for r in mine),
                modalities=_distinct(r.modality for r in mine),
                calling_ae_titles=_distinct(r.calling_ae_title for r in mine),
                jobs=tuple(jobs[study.pk]),
                patient=patients.get(study.pk),
            )
        )
    return out


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if v}))


def _patients(session: Session, studies: Sequence[Study]) -> dict[int, PatientDetails]:
    """Patient details per study; the birth date from the header of its first series."""
    pks = [s.pk for s in studies]
    first = select(func.min(Series.pk)).where(Series.study_fk.in_(pks)).group_by(Series.study_fk)
    births = {
        study_fk: str((header or {}).get("PatientBirthDate", ""))
        for study_fk, header in session.execute(
            select(Series.study_fk, Series.header).where(Series.pk.in_(first))
        )
    }
    rows = session.execute(
        select(Study.pk, Patient.patient_name, Patient.patient_id, Patient.issuer_of_patient_id)
        .join(Patient, Study.patient_fk == Patient.pk)
        .where(Study.pk.in_(pks))
    )
    return {
        pk: PatientDetails(name, patient_id, issuer, births.get(pk, ""))
        for pk, name, patient_id, issuer in rows
    }


# -- jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryCounts:
    """A job's deliveries (results x destinations) by state."""

    pending: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass(frozen=True)
class JobSummary:
    """One job in the jobs list: model, state and why, its study and series, its output.

    ``calling_ae_title`` and ``modality`` are those of the job's (first) series;
    ``duration_s`` is how long its last run took (``None`` until one finished).
    """

    pk: int
    model_name: str
    model_version: str
    revision: int
    state: JobState
    reason: str
    attempts: int
    duration_s: float | None
    created_at: dt.datetime
    updated_at: dt.datetime
    subject: str
    study_instance_uid: str
    study_date: str
    accession_number: str
    series_instance_uid: str
    modality: str
    calling_ae_title: str
    results: int
    deliveries: DeliveryCounts


#: The columns of a job row (no explanation: the list never shows it).
_JOB_COLUMNS = (
    Job.pk,
    Job.model_name,
    Job.model_version,
    Job.revision,
    Job.state,
    Job.reason,
    Job.attempts,
    Job.duration_s,
    Job.created_at,
    Job.updated_at,
    Job.subject,
    Study.study_instance_uid,
    Study.study_date,
    Study.accession_number,
    Series.series_instance_uid,
    Series.modality,
    Series.calling_ae_title,
)


def job_rows() -> Select[*tuple[Any, ...]]:
    """Jobs with their study and series columns (:data:`_JOB_COLUMNS`), unordered."""
    return (
        select(*_JOB_COLUMNS)
        .join(Study, Job.study_fk == Study.pk)
        .join(Series, Job.series_fk == Series.pk)
    )


def job_summaries(session: Session, rows: Sequence[Any]) -> list[JobSummary]:
    """Rows of :func:`job_rows` as list rows, with their results and deliveries counted."""
    pks = [r.pk for r in rows]
    results = dict(
        session.execute(
            select(Result.job_fk, func.count())
            .where(Result.job_fk.in_(pks))
            .group_by(Result.job_fk)
        ).all()
    )
    deliveries: dict[int, dict[str, int]] = defaultdict(dict)
    for job_fk, state, count in session.execute(
        select(Result.job_fk, Delivery.state, func.count())
        .join(Delivery, Delivery.result_fk == Result.pk)
        .where(Result.job_fk.in_(pks))
        .group_by(Result.job_fk, Delivery.state)
    ):
        deliveries[job_fk][state] = count
    return [_job_summary(r, int(results.get(r.pk, 0)), deliveries.get(r.pk, {})) for r in rows]


def _job_summary(r: Any, results: int, deliveries: Mapping[str, int]) -> JobSummary:
    return JobSummary(
        pk=r.pk,
        model_name=r.model_name,
        model_version=r.model_version,
        revision=r.revision,
        state=JobState(r.state),
        reason=r.reason,
        attempts=r.attempts,
        duration_s=r.duration_s,
        created_at=as_utc(r.created_at),
        updated_at=as_utc(r.updated_at),
        subject=r.subject,
        study_instance_uid=r.study_instance_uid,
        study_date=r.study_date,
        accession_number=r.accession_number,
        series_instance_uid=r.series_instance_uid,
        modality=r.modality,
        calling_ae_title=r.calling_ae_title,
        results=results,
        deliveries=DeliveryCounts(
            pending=deliveries.get(DeliveryState.PENDING.value, 0),
            delivered=deliveries.get(DeliveryState.DELIVERED.value, 0),
            failed=deliveries.get(DeliveryState.FAILED.value, 0),
        ),
    )
