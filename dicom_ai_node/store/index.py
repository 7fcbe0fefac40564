"""Store: indexing received instances and series completion (the only SQL for ingest).

One transaction per instance indexes it and updates its series; the C-STORE handler
answers Success only after it commits (PS3.4 B.2.3).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..domain import SeriesState, expected_count_reached
from ..errors import StorageError
from .db import as_utc
from .tables import Event, Instance, Patient, Series, Study

__all__ = [
    "IndexOutcome",
    "InstanceRecord",
    "ReceivingSeries",
    "SeriesAttrs",
    "complete_series",
    "find_instance",
    "index_instance",
    "known_instance_hash",
    "record_event",
]


class IndexOutcome(enum.Enum):
    """What indexing an instance did."""

    NEW = "new"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: nothing to do
    CONFLICT = "conflict"  # same SOP Instance UID, different bytes: the first one is kept


@dataclass(frozen=True)
class SeriesAttrs:
    """Patient, study and series values of a series, read from one of its instances."""

    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    study_description: str = ""
    accession_number: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    expected_count: int | None = None
    header: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps of one received instance (read from its header)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    path: str
    size: int
    sha256: str
    received_at: dt.datetime
    calling_ae_title: str = ""
    instance_number: int | None = None
    series: SeriesAttrs = field(default_factory=SeriesAttrs)


def record_event(
    session: Session,
    now: dt.datetime,
    study_uid: str,
    kind: str,
    message: str,
    series_uid: str = "",
) -> None:
    """Add a line to a study's history (UIDs and reasons only, never patient data)."""
    session.add(
        Event(
            at=now,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            kind=kind,
            message=message,
        )
    )


def find_instance(session: Session, sop_instance_uid: str) -> Instance | None:
    """The indexed instance with this SOP Instance UID, if any."""
    return session.scalars(
        select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    ).one_or_none()


def known_instance_hash(sessions: sessionmaker[Session], sop_instance_uid: str) -> str | None:
    """The content hash of an indexed instance, or None when it is not indexed.

    Raises
    ------
    StorageError
        When the database cannot be read.
    """
    try:
        with sessions() as session:
            row = find_instance(session, sop_instance_uid)
            return row.sha256 if row is not None else None
    except OperationalError as exc:
        raise StorageError(f"cannot read the index: {type(exc).__name__}") from exc


def _get_or_create_study(session: Session, rec: InstanceRecord) -> Study:
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == rec.study_instance_uid)
    ).one_or_none()
    if study is not None:
        return study
    patient = session.scalars(
        select(Patient).where(
            Patient.patient_id == rec.series.patient_id,
            Patient.issuer_of_patient_id == rec.series.issuer_of_patient_id,
        )
    ).one_or_none()
    if patient is None:
        patient = Patient(
            patient_id=rec.series.patient_id,
            issuer_of_patient_id=rec.series.issuer_of_patient_id,
            patient_name=rec.series.patient_name,
        )
        session.add(patient)
        session.flush()
    study = Study(
        study_instance_uid=rec.study_instance_uid,
        patient_fk=patient.pk,
        study_date=rec.series.study_date,
        study_description=rec.series.study_description[:64],
        accession_number=rec.series.accession_number[:16],
        created_at=rec.received_at,
    )
    session.add(study)
    session.flush()
    return study


def _new_series(session: Session, rec: InstanceRecord) -> int:
    study = _get_or_create_study(session, rec)
    series = Series(
        series_instance_uid=rec.series_instance_uid,
        study_fk=study.pk,
        modality=rec.series.modality[:16],
        series_number=rec.series.series_number,
        series_description=rec.series.series_description[:64],
        calling_ae_title=rec.calling_ae_title,
        header=rec.series.header,
        instance_count=0,
        expected_count=rec.series.expected_count,
        first_received_at=rec.received_at,
        last_received_at=rec.received_at,
        state=SeriesState.RECEIVING.value,
        generation=0,
        late_instances=0,
        reason="",
    )
    session.add(series)
    session.flush()
    return series.pk


_SERIES = cast(Table, Series.__table__)
_INSTANCE = cast(Table, Instance.__table__)
#: Counts an instance in its series and returns what decides lateness and completion.
_COUNT_INSTANCE = (
    update(_SERIES)
    .where(_SERIES.c.series_instance_uid == bindparam("uid"))
    .values(instance_count=_SERIES.c.instance_count + 1, last_received_at=bindparam("at"))
    .returning(_SERIES.c.pk, _SERIES.c.state, _SERIES.c.instance_count, _SERIES.c.expected_count)
)
_INSERT_INSTANCE = insert(_INSTANCE)
_INSERT_EVENT = insert(cast(Table, Event.__table__))


def _count(conn: Connection, rec: InstanceRecord, late_policy: str) -> tuple[int, bool] | None:
    """Count the instance in its series; returns the series pk and lateness, None if no series.

    Prebuilt Core statements: this runs once per received instance. The count is
    incremented first (``UPDATE ... RETURNING``), so the state it returns is read under
    the row's write lock.
    """
    params = {"uid": rec.series_instance_uid, "at": rec.received_at}
    row = conn.execute(_COUNT_INSTANCE, params).one_or_none()
    if row is None:
        return None
    pk, state, count, expected = row
    late = state != SeriesState.RECEIVING.value
    values: dict[str, Any] = {}
    if late:
        values["late_instances"] = _SERIES.c.late_instances + 1
        if late_policy == "rerun":
            values.update(
                state=SeriesState.RECEIVING.value,
                generation=_SERIES.c.generation + 1,
                completed_at=None,
            )
            state = SeriesState.RECEIVING.value
    if state == SeriesState.RECEIVING.value and expected_count_reached(count, expected):
        values.update(
            state=SeriesState.COMPLETE.value,
            completed_at=rec.received_at,
            reason=f"expected instance count {expected} reached",
        )
    if values:
        conn.execute(update(_SERIES).where(_SERIES.c.pk == pk).values(**values))
    return int(pk), late


def _insert(conn: Connection, rec: InstanceRecord, series_pk: int, late: bool, policy: str) -> None:
    """The instance row, and a history line when it came after its series was complete."""
    conn.execute(
        _INSERT_INSTANCE,
        {
            "sop_instance_uid": rec.sop_instance_uid,
            "sop_class_uid": rec.sop_class_uid,
            "series_fk": series_pk,
            "transfer_syntax_uid": rec.transfer_syntax_uid,
            "instance_number": rec.instance_number,
            "path": rec.path,
            "size": rec.size,
            "sha256": rec.sha256,
            "calling_ae_title": rec.calling_ae_title,
            "received_at": rec.received_at,
        },
    )
    if late:
        conn.execute(
            _INSERT_EVENT,
            {
                "at": rec.received_at,
                "study_instance_uid": rec.study_instance_uid,
                "series_instance_uid": rec.series_instance_uid,
                "kind": "late-instance",
                "message": f"instance {rec.sop_instance_uid} arrived after completion "
                f"(policy {policy})",
            },
        )


def _index_once(sessions: sessionmaker[Session], rec: InstanceRecord, late_policy: str) -> None:
    """One attempt, in one transaction: on a plain Connection when the series exists."""
    engine = sessions.kw.get("bind")
    if isinstance(engine, Engine):
        with engine.begin() as conn:
            counted = _count(conn, rec, late_policy)
            if counted is not None:
                _insert(conn, rec, *counted, late_policy)
                return
    with sessions.begin() as session:  # first instance of its series: create it (ORM)
        conn = session.connection()
        counted = _count(conn, rec, late_policy)
        if counted is None:
            _new_series(session, rec)
            counted = _count(conn, rec, late_policy)
            assert counted is not None
        _insert(conn, rec, *counted, late_policy)


def index_instance(
    sessions: sessionmaker[Session], rec: InstanceRecord, *, late_policy: str = "rerun"
) -> IndexOutcome:
    """Index one stored instance and update its series in one transaction.

    Parameters
    ----------
    sessions:
        The session factory.
    rec:
        The instance; its file is already durable at ``rec.path``.
    late_policy:
        ``rerun`` re-opens a completed series so a new job supersedes the old results;
        ``record`` only counts the late instance.

    Returns
    -------
    IndexOutcome
        NEW when indexed, DUPLICATE when the same bytes were indexed before, CONFLICT when
        another instance with this SOP Instance UID and different bytes exists.

    Raises
    ------
    StorageError
        When the database cannot commit after retries (the caller removes the file).
    """
    last: Exception | None = None
    for _attempt in range(3):
        try:
            _index_once(sessions, rec, late_policy)
            return IndexOutcome.NEW
        except IntegrityError as exc:  # already indexed, or a concurrent association raced us
            last = exc
            known = known_instance_hash(sessions, rec.sop_instance_uid)
            if known is not None:
                return IndexOutcome.DUPLICATE if known == rec.sha256 else IndexOutcome.CONFLICT
        except OperationalError as exc:  # database locked or unavailable
            last = exc
    raise StorageError(f"cannot index instance: {type(last).__name__}") from last


@dataclass(frozen=True)
class ReceivingSeries:
    """A series still receiving instances, as the completion policy reads it."""

    series_instance_uid: str
    instance_count: int
    expected_count: int | None
    last_received_at: dt.datetime


def complete_series(
    sessions: sessionmaker[Session],
    now: dt.datetime,
    quiet_since: dt.datetime,
    reason_of: Callable[[ReceivingSeries], str | None],
) -> list[str]:
    """Mark receiving series complete, for the reason the policy gives; return their UIDs.

    Completion counts from ``last_received_at`` in the database, so a restart resumes
    where it was (no in-memory timers). A series is not marked when an instance arrived
    between this read and the write.

    Parameters
    ----------
    sessions:
        The session factory.
    now:
        The time recorded as ``completed_at``.
    quiet_since:
        Only series whose last instance came at or before this are read.
    reason_of:
        The completion policy: why a series is complete, or None while it is not.
    """
    with sessions.begin() as session:
        rows = session.scalars(
            select(Series).where(
                Series.state == SeriesState.RECEIVING.value,
                Series.last_received_at <= quiet_since,
            )
        ).all()
        done = []
        for series in rows:
            reason = reason_of(
                ReceivingSeries(
                    series.series_instance_uid,
                    series.instance_count,
                    series.expected_count,
                    as_utc(series.last_received_at),
                )
            )
            if reason is None:
                continue
            result = session.execute(  # not if an instance arrived since it was read
                update(Series)
                .where(
                    Series.pk == series.pk,
                    Series.state == SeriesState.RECEIVING.value,
                    Series.instance_count == series.instance_count,
                    Series.last_received_at <= quiet_since,
                )
                .values(state=SeriesState.COMPLETE.value, completed_at=now, reason=reason)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                done.append(series.series_instance_uid)
        return done
