"""Store: the studies and jobs lists of the operator's screens and API, and their details.

The lists are here; the shapes they share are in :mod:`.rows`, a study's timeline, a
job's detail and a result's files in :mod:`.timeline`, all importable from here (the
web stage reads them as ``store.views``). No patient field is read unless asked for.
"""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import JobState, parse_enum
from .rows import (
    MAX_PAGE,
    BadCursor,
    DeliveryCounts,
    JobBrief,
    JobSummary,
    Page,
    PatientDetails,
    StudySummary,
    decode_cursor,
    job_rows,
    job_summaries,
    page_of,
    page_size,
    study_date_bound,
    study_summaries,
)
from .tables import Job, Series, Study
from .timeline import (
    Candidate,
    EventRow,
    JobDetail,
    ResultFiles,
    ResultRow,
    Routing,
    SeriesStep,
    StudyTimeline,
    job_detail,
    result_files,
    study_timeline,
)

__all__ = [
    "MAX_PAGE",
    "BadCursor",
    "Candidate",
    "DeliveryCounts",
    "EventRow",
    "JobBrief",
    "JobDetail",
    "JobSummary",
    "Page",
    "PatientDetails",
    "ResultFiles",
    "ResultRow",
    "Routing",
    "SeriesStep",
    "StudySummary",
    "StudyTimeline",
    "job_detail",
    "list_jobs",
    "list_studies",
    "result_files",
    "study_timeline",
]


def list_studies(
    sessions: sessionmaker[Session],
    *,
    date_from: str | None = None,
    date_to: str | None = None,
    model: str | None = None,
    state: str | JobState | None = None,
    calling_ae: str | None = None,
    accession: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    with_patient: bool = False,
) -> Page[StudySummary]:
    """Studies, newest first, filtered; patient details only with ``with_patient``.

    Parameters
    ----------
    sessions:
        The session factory.
    date_from, date_to:
        StudyDate (0008,0020) bounds as ``YYYYMMDD``, inclusive; a study without a date
        is left out when either is given.
    model, state:
        Only studies with a job of this model, in this state (both: the same job).
    calling_ae:
        Only studies with a series sent by this AE title.
    accession:
        Only studies with this AccessionNumber (0008,0050).
    limit:
        Studies per page (1 to :data:`MAX_PAGE`).
    cursor:
        ``next_cursor`` of the page before; ``None`` for the first page.
    with_patient:
        Read PatientName, PatientID and PatientBirthDate (operator and admin only).

    Raises
    ------
    ValueError
        A date that is not ``YYYYMMDD``, or an unknown job state.
    BadCursor
        A cursor this list did not make.
    """
    limit = page_size(limit)
    query = select(Study).order_by(Study.pk.desc()).limit(limit + 1)
    lo, hi = study_date_bound(date_from, "date_from"), study_date_bound(date_to, "date_to")
    if lo is not None:
        query = query.where(Study.study_date >= lo)
    if hi is not None:
        query = query.where(Study.study_date <= hi, Study.study_date != "")
    if model or state:
        job = [Job.study_fk == Study.pk]
        if model:
            job.append(Job.model_name == model)
        if state:
            job.append(Job.state == parse_enum(JobState, state).value)
        query = query.where(exists().where(*job))
    if calling_ae:
        query = query.where(
            exists().where(Series.study_fk == Study.pk, Series.calling_ae_title == calling_ae)
        )
    if accession:
        query = query.where(Study.accession_number == accession)
    if cursor is not None:
        query = query.where(Study.pk < decode_cursor("study", cursor))
    with sessions() as session:
        rows = session.scalars(query).all()
        summaries = study_summaries(session, rows[: limit + 1], with_patient)
    return page_of("study", summaries, limit, lambda s: s.pk)


def list_jobs(
    sessions: sessionmaker[Session],
    *,
    state: str | JobState | None = None,
    model: str | None = None,
    calling_ae: str | None = None,
    accession: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[JobSummary]:
    """Jobs, newest first (keyset on the job's key), filtered.

    Parameters
    ----------
    sessions:
        The session factory.
    state:
        Only jobs in this state (a :class:`~dicom_ai_node.domain.JobState` value).
    model:
        Only jobs of this model.
    calling_ae:
        Only jobs whose series this AE title sent.
    accession:
        Only jobs of studies with this AccessionNumber (0008,0050).
    date_from, date_to:
        StudyDate bounds as ``YYYYMMDD``, inclusive.
    limit:
        Jobs per page (1 to :data:`MAX_PAGE`).
    cursor:
        ``next_cursor`` of the page before; ``None`` for the first page.

    Raises
    ------
    ValueError
        An unknown state or a date that is not ``YYYYMMDD``.
    BadCursor
        A cursor this list did not make.
    """
    limit = page_size(limit)
    query = job_rows().order_by(Job.pk.desc()).limit(limit + 1)
    if state:
        query = query.where(Job.state == parse_enum(JobState, state).value)
    if model:
        query = query.where(Job.model_name == model)
    if calling_ae:
        query = query.where(Series.calling_ae_title == calling_ae)
    if accession:
        query = query.where(Study.accession_number == accession)
    lo, hi = study_date_bound(date_from, "date_from"), study_date_bound(date_to, "date_to")
    if lo is not None:
        query = query.where(Study.study_date >= lo)
    if hi is not None:
        query = query.where(Study.study_date <= hi, Study.study_date != "")
    if cursor is not None:
        query = query.where(Job.pk < decode_cursor("job", cursor))
    with sessions() as session:
        rows = session.execute(query).all()
        summaries = job_summaries(session, rows)
    return page_of("job", summaries, limit, lambda j: j.pk)
