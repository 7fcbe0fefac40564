"""What the web stage's tests share: a WebContext over a real SQLite index and audit log,
users of each role, and a study seeded through the store's functions as the pipeline
leaves it (received, complete, routed, inferred, encoded, delivered or failed).

Use the fixture by importing it into a test module::

    from ..web_support import web_context  # noqa: F401

or build a context yourself with :func:`web_context_at` (a context manager).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_ai_node.audit.node import NodeAudit, audit_paths
from dicom_ai_node.audit.operator import OperatorAudit
from dicom_ai_node.domain import JobState
from dicom_ai_node.metrics import NodeMetrics
from dicom_ai_node.settings import KnownAE, NodeSettings, RouteSettings, StorageSettings
from dicom_ai_node.store import accounts
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.store.index import InstanceRecord, SeriesAttrs, complete_series, index_instance
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job, fail_job
from dicom_ai_node.store.outbox import due_deliveries, finish_delivery_attempt
from dicom_ai_node.store.routing import job_key
from dicom_ai_node.store.tables import Job, Result, Series
from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
)
from dicom_ai_node.web.context import Backend, ModelInfo, WebContext

__all__ = [
    "DEAD_DESTINATION",
    "DESTINATION",
    "MODEL",
    "PASSWORD",
    "RULES_TEXT",
    "SeededStudy",
    "add_users",
    "seed_study",
    "web_context",
    "web_context_at",
]

#: The destination every seeded result goes to (configured in the context's backend).
DESTINATION = "PACS@127.0.0.1:11112"
#: A configured destination that refuses every delivery (for failed deliveries).
DEAD_DESTINATION = "DEAD@127.0.0.1:9"
#: The installed model of the context, and a second one whose jobs fail.
MODEL = "ct_test"
FAILING_MODEL = "ct_flaky"
#: Every test user's password (one user per role: viewer, operator, admin).
PASSWORD = "correct horse battery"
#: The rules file's text: peer-like markup that must reach the page as text.
RULES_TEXT = "rules:\n  - name: chest <b>ct</b>\n    model: ct_test\n"


def _backend() -> Backend:
    models = [
        ModelInfo(MODEL, "1.0", "cpu", True, "Test model"),
        ModelInfo(FAILING_MODEL, "0.1", "cpu", False, "A model whose jobs fail"),
    ]
    return Backend(
        models=lambda: list(models),
        listener=lambda: {"ae_title": "DICOM_AI_NODE", "host": "127.0.0.1", "port": 11112},
        destinations=lambda: [DEAD_DESTINATION, DESTINATION],
    )


@contextlib.contextmanager
def web_context_at(
    folder: Path, *, backend: Backend | None = None, **settings: Any
) -> Iterator[WebContext]:
    """A WebContext over a new index and audit log in ``folder``, closed on exit.

    ``settings`` override fields of :class:`~dicom_ai_node.settings.NodeSettings`.
    """
    rules = folder / "rules.yaml"
    rules.write_text(RULES_TEXT, "utf-8")
    fields: dict[str, Any] = {
        "storage": StorageSettings(root=str(folder / "storage"), spare_pool_mb=0),
        "route": RouteSettings(rules_file=str(rules)),
        "ae_table": (KnownAE("MODALITY", "127.0.0.1", 11113),),
        "base_dir": str(folder),
    }
    node_settings = NodeSettings(**(fields | settings))
    db = Database(node_settings.database_url)
    db.migrate()
    audit = NodeAudit(node_settings, db.session, utcnow)
    try:
        yield WebContext(
            settings=node_settings,
            sessions=db.session,
            metrics=NodeMetrics(process=False),
            audit=OperatorAudit(audit.trail, audit.source, audit.node, utcnow),
            clock=utcnow,
            backend=backend or _backend(),
            audit_log=audit_paths(node_settings)[0],
            storage_root=node_settings.path(node_settings.storage.root),
        )
    finally:
        audit.trail.close()
        db.dispose()


@pytest.fixture
def web_context(tmp_path: Path) -> Iterator[WebContext]:
    """A WebContext over a fresh SQLite index and audit log in ``tmp_path``."""
    with web_context_at(tmp_path) as ctx:
        yield ctx


def add_users(ctx: WebContext) -> None:
    """Users ``viewer``, ``operator`` and ``admin``, each with :data:`PASSWORD`."""
    for role in accounts.ROLES:
        accounts.add_user(ctx.sessions, role, PASSWORD, role, ctx.clock())


@dataclass(frozen=True)
class SeededStudy:
    """What :func:`seed_study` made."""

    study_instance_uid: str
    series_instance_uid: str
    job_pk: int
    result_pk: int
    failed_job_pk: int | None


def _add_job(sessions: sessionmaker[Session], series_uid: str, model: str, at: dt.datetime) -> None:
    with sessions.begin() as session:
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == series_uid)
        ).one()
        session.add(
            Job(
                job_key=job_key(model, "1.0", series_uid, 0),
                study_fk=series.study_fk,
                series_fk=series.pk,
                model_name=model,
                model_version="1.0",
                subject=series_uid,
                explanation={
                    "routing": [f"rule 'chest' -> {model}: matched (Modality CT)"],
                    "series": [series_uid],
                    "selection": [f"chosen {series_uid}: the only series"],
                },
                created_at=at,
                updated_at=at,
            )
        )


def seed_study(
    ctx: WebContext,
    n: int = 1,
    *,
    delivered: bool = True,
    failed_delivery: bool = False,
    failed_job: bool = False,
    patient_name: str = CANARY_PATIENT_NAME,
) -> SeededStudy:
    """Study ``n``: 3 CT instances from ``MODALITY`` (canary patient), complete, one job of
    :data:`MODEL` done with an SR sent to :data:`DESTINATION`.

    ``delivered``: the delivery succeeded (else it is pending); ``failed_delivery``: the
    result also went to :data:`DEAD_DESTINATION`, which refused it for good;
    ``failed_job``: a job of ``ct_flaky`` on the same series failed.
    """
    sessions, now = ctx.sessions, ctx.clock() - dt.timedelta(minutes=10)
    study, series = f"1.2.826.0.1.3680043.10.9.{n}", f"1.2.826.0.1.3680043.10.9.{n}.1"
    attrs = SeriesAttrs(
        patient_id=CANARY_PATIENT_ID,
        patient_name=patient_name,
        study_date="20260102",
        study_description="CT chest <i>peer text</i>",
        accession_number=f"ACC{n}",
        modality="CT",
        series_number=1,
        series_description="thin",
        header={"PatientBirthDate": CANARY_BIRTH_DATE},
    )
    for k in range(3):
        index_instance(
            sessions,
            InstanceRecord(
                sop_instance_uid=f"{series}.{k + 1}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                study_instance_uid=study,
                series_instance_uid=series,
                path=f"in/{n}/{k}.dcm",
                size=1,
                sha256=f"{n:02d}{k:02d}".ljust(64, "0"),
                received_at=now + dt.timedelta(seconds=k),
                calling_ae_title="MODALITY",
                instance_number=k + 1,
                series=attrs,
            ),
        )
    now += dt.timedelta(seconds=12)
    complete_series(sessions, now, now, lambda s: "quiet for 10 s")
    _add_job(sessions, series, MODEL, now)
    claimed = claim_job(sessions, now, 60.0, [MODEL])
    assert claimed is not None
    sop = f"{series}.9.1"
    result = NewResult("SR", sop, "1.2.840.10008.5.1.4.1.1.88.34", f"{series}.9", f"out/{n}.dcm")
    targets = [DESTINATION] + ([DEAD_DESTINATION] if failed_delivery else [])
    now += dt.timedelta(seconds=3)
    assert complete_job(sessions, claimed, now, JobState.DONE, "done", [result], targets, 60.0, 1.5)
    for due in due_deliveries(sessions, now + dt.timedelta(seconds=1)):
        if due.sop_instance_uid != sop:
            continue
        if due.destination == DESTINATION and delivered:
            finish_delivery_attempt(
                sessions, due, now, delivered=True, status=0, error="", next_attempt_at=None
            )
        elif due.destination == DEAD_DESTINATION:
            finish_delivery_attempt(
                sessions, due, now, delivered=False, status=None,
                error="connection refused <script>alert(1)</script>", next_attempt_at=None,
            )  # fmt: skip
    failed_pk = None
    if failed_job:
        _add_job(sessions, series, FAILING_MODEL, now)
        flaky = claim_job(sessions, now, 60.0, [FAILING_MODEL])
        assert flaky is not None
        assert fail_job(sessions, flaky, now, "input check failed: 3 slices <b>too few</b>")
        failed_pk = flaky.pk
    with sessions() as session:
        job_pk = session.scalars(
            select(Job.pk).where(Job.subject == series, Job.model_name == MODEL)
        ).one()
        result_pk = session.scalars(select(Result.pk).where(Result.sop_instance_uid == sop)).one()
    return SeededStudy(study, series, job_pk, result_pk, failed_pk)
