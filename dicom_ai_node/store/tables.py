"""Store: the index tables (SQLAlchemy 2.x); the information model of PS3.3 A.1.2 plus jobs.

patient -> study -> series -> instance follow the DICOM information model. ``job`` is one
model run on one series (or study), ``result`` one DICOM object a job produced, and
``delivery`` one result to one destination (the durable outbox). ``event`` is the history
an operator reads with ``dicom-ai-node jobs`` and the web timeline: what happened to each
study and why, operators' actions included.

The operator's window adds its accounts (``web_user``, ``api_token``, ``web_session``:
secrets only as hashes), the history of associations (``association``) and what an
operator paused (``pause``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ApiToken",
    "Association",
    "Base",
    "Delivery",
    "Event",
    "Instance",
    "Job",
    "Patient",
    "Pause",
    "Result",
    "Series",
    "Study",
    "WebSession",
    "WebUser",
]

UID = String(64)  # PS3.5 UI: at most 64 characters


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class Patient(Base):
    """A patient as identified by the sender (PatientID plus IssuerOfPatientID)."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")


class Study(Base):
    """A study (PS3.3 C.7.2.1)."""

    __tablename__ = "study"
    __table_args__ = (Index("ix_study_accession_number", "accession_number"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.pk"))
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[dt.datetime]

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """A series and its completion state (see docs/architecture.md)."""

    __tablename__ = "series"
    __table_args__ = (
        Index("ix_series_state_last", "state", "last_received_at"),
        Index("ix_series_calling_ae_title", "calling_ae_title"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    header: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    expected_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    first_received_at: Mapped[dt.datetime]
    last_received_at: Mapped[dt.datetime]
    state: Mapped[str] = mapped_column(String(16), default="receiving")
    completed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)  # bumps on late instances
    late_instances: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")

    study: Mapped[Study] = relationship(back_populates="series")


class Instance(Base):
    """One stored SOP instance; ``path`` is relative to the storage root."""

    __tablename__ = "instance"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.pk"), index=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[dt.datetime]


class Job(Base):
    """One model run on one subject: a study (one job per study and model) or a series.

    ``subject`` is ``study/<uid>`` or ``series/<uid>``; the jobs of one model on one
    subject are its revisions 0, 1, ..., each naming the one it revises
    (``predecessor_fk``), and ``input_key`` records the series (and their generations)
    it ran on, so that the same input never makes a second job.
    """

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("job_key"),
        Index("ix_job_state", "state", "lease_until"),
        Index("ix_job_subject", "subject", "model_name"),
        # the operator's job lists: newest first, by state or by model (keyset on pk)
        Index("ix_job_state_pk", "state", "pk"),
        Index("ix_job_model_pk", "model_name", "pk"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_key: Mapped[str] = mapped_column(String(200))  # deterministic: results' UIDs derive from it
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.pk"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    reason: Mapped[str] = mapped_column(Text, default="")
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    subject: Mapped[str] = mapped_column(String(80), default="")
    revision: Mapped[int] = mapped_column(Integer, default=0)
    predecessor_fk: Mapped[int | None] = mapped_column(ForeignKey("job.pk"), nullable=True)
    input_key: Mapped[str] = mapped_column(Text, default="")


class Result(Base):
    """One DICOM object a job produced (its kind: SEG, SR, SC, KOS, GSPS or PDF), stored
    under the storage root."""

    __tablename__ = "result"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_fk: Mapped[int] = mapped_column(ForeignKey("job.pk"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]


class Delivery(Base):
    """One result to one destination: the durable outbox row."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("result_fk", "destination"),
        Index("ix_delivery_due", "state", "next_attempt_at"),
        Index("ix_delivery_destination_attempt", "destination", "last_attempt_at"),
        Index("ix_delivery_destination_state", "destination", "state"),  # destinations screen
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_fk: Mapped[int] = mapped_column(ForeignKey("result.pk"), index=True)
    destination: Mapped[str] = mapped_column(String(300))  # AE@HOST:PORT
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    deadline_at: Mapped[dt.datetime]
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    #: Times an operator put it back (re-send, retry): fences out an attempt in flight then.
    resends: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Event(Base):
    """A line of a study's history: what happened and why (UIDs only, no patient data)."""

    __tablename__ = "event"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime]
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, default="")
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class WebUser(Base):
    """A local account of the web service; ``password_hash`` as :mod:`dicom_ai_node.passwords`."""

    __tablename__ = "web_user"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # viewer, operator or admin
    created_at: Mapped[dt.datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A bearer token: only the SHA-256 (hex) of its text is kept; shown once when made."""

    __tablename__ = "api_token"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    username: Mapped[str] = mapped_column(String(64), default="")  # "" when made from a shell
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class WebSession(Base):
    """A signed-in browser: the SHA-256 (hex) of its cookie, its role and its CSRF token."""

    __tablename__ = "web_session"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Association(Base):
    """One association a sender opened (or tried to): who, from where, how it ended."""

    __tablename__ = "association"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime]
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    called_ae_title: Mapped[str] = mapped_column(String(16), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(16))  # completed, aborted, rejected, refused
    reason: Mapped[str] = mapped_column(Text, default="")


class Pause(Base):
    """A model (its jobs are not claimed) or a destination (nothing is sent) an operator paused."""

    __tablename__ = "pause"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # model or destination
    name: Mapped[str] = mapped_column(String(300))  # model name, or AE@HOST:PORT
    paused_at: Mapped[dt.datetime]
    username: Mapped[str] = mapped_column(String(64), default="")
