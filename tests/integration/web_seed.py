"""Test support: a node with its HTTP service on a free port over a seeded SQLite index.

The index holds two studies whose patient fields are the suite's PHI canaries, a done job
with a result queued for delivery, a failed job and a queued one; API tokens of every role
are made through the store. The node's clock can be moved forward (expired tokens).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import select
from starlette.routing import BaseRoute, Route

from dicom_ai_node.app import Node
from dicom_ai_node.app_web import web_context
from dicom_ai_node.audit.node import audit_paths
from dicom_ai_node.domain import JobState
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store import accounts
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.store.index import InstanceRecord, SeriesAttrs, index_instance
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job, fail_job
from dicom_ai_node.store.routing import job_key
from dicom_ai_node.store.tables import Job, Result, Series
from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
)
from dicom_ai_node.web.app import create_app
from dicom_ai_node.web.server import WebServer

from ..conftest import free_port, write_node_config

ROLES = ("viewer", "operator", "admin")
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"
STUDY2, SERIES2 = "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.2.1"
MODEL = "ct_chest_lungs"
PACS_PORT = 11112


@dataclass
class Clock:
    """UTC now, plus an offset a test can move forward."""

    offset: dt.timedelta = field(default_factory=dt.timedelta)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


@dataclass
class WebNode:
    """A running node's HTTP service and what the index was seeded with."""

    node: Node
    url: str
    clock: Clock
    tokens: dict[str, str]
    token_pks: dict[str, int]
    audit_log: Path
    destination: str
    job_done: int
    job_failed: int
    job_queued: int
    result: int
    app: FastAPI | None

    def headers(self, role: str) -> dict[str, str]:
        """The bearer header of the seeded token of ``role``."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def audit_text(self) -> str:
        """The local audit log so far."""
        return (
            self.audit_log.read_text("utf-8", errors="replace") if self.audit_log.is_file() else ""
        )


def app_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, included routers walked (FastAPI keeps a router
    included in another as one entry with the router and its prefix); each path as the
    OpenAPI document writes it, without converters."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from app_routes(inner.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, prefix + route.path_format  # {name:path} as {name}


def _record(study: str, series: str, n: int, now: dt.datetime) -> InstanceRecord:
    attrs = SeriesAttrs(
        patient_id=CANARY_PATIENT_ID,
        patient_name=CANARY_PATIENT_NAME,
        study_date="20260101",
        accession_number="ACC1",
        modality="CT",
        series_number=1,
        series_description="chest",
        header={"PatientBirthDate": CANARY_BIRTH_DATE},
    )
    return InstanceRecord(
        sop_instance_uid=f"{series}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid=study,
        series_instance_uid=series,
        path=f"{series}/{n}.dcm",
        size=1,
        sha256=f"{n:064x}",
        received_at=now,
        calling_ae_title="PACS",
        instance_number=n,
        series=attrs,
    )


def _add_job(db: Database, series_uid: str, revision_key: str, now: dt.datetime) -> int:
    with db.session.begin() as session:
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == series_uid)
        ).one()
        subject = f"series/{series_uid}"
        job = Job(
            job_key=job_key(MODEL, revision_key, subject, 0),
            study_fk=series.study_fk,
            series_fk=series.pk,
            model_name=MODEL,
            model_version=revision_key,
            created_at=now,
            updated_at=now,
            subject=subject,
            revision=0,
            input_key=f"{series_uid}@g0",
        )
        session.add(job)
        session.flush()
        return job.pk


def seed(db: Database, now: dt.datetime, destination: str) -> tuple[int, int, int, int]:
    """Two studies, a done job with a result queued to ``destination``, a failed job and
    a queued one; returns (done, failed, queued, result)."""
    for study, series in ((STUDY, SERIES), (STUDY2, SERIES2)):
        for n in (1, 2):
            index_instance(db.session, _record(study, series, n, now))
    done = _add_job(db, SERIES, "1", now)
    claimed = claim_job(db.session, now, 60.0, [MODEL])
    assert claimed is not None and claimed.pk == done
    result = NewResult("SR", f"2.25.{done}1", "1.2.840.10008.5.1.4.1.1.88.34", f"2.25.{done}2", "r")
    assert complete_job(
        db.session, claimed, now, JobState.DONE, "results encoded", [result], [destination],
        3600.0, 1.0,
    )  # fmt: skip
    failed = _add_job(db, SERIES2, "1", now)
    claimed = claim_job(db.session, now, 60.0, [MODEL])
    assert claimed is not None and claimed.pk == failed
    assert fail_job(db.session, claimed, now, "input check failed: too few slices")
    queued = _add_job(db, SERIES, "2", now)
    with db.session() as session:
        result_pk = session.scalars(select(Result.pk)).first()
    assert result_pk is not None
    return done, failed, queued, result_pk


def _app_of(node: Node) -> tuple[FastAPI, WebServer]:
    app = create_app(web_context(node))  # the context `serve` builds
    return app, WebServer(app, "127.0.0.1", 0)


@contextlib.contextmanager
def web_node(
    tmp_path: Path, *, extra: str = "", web_extra: str = "", dicom: bool = False
) -> Iterator[WebNode]:
    """A node over a seeded index with its HTTP service started (and its DICOM listener
    and loops too when ``dicom``); stopped at the end."""
    db_url = f"sqlite:///{tmp_path / 'index.db'}"
    config = write_node_config(
        tmp_path,
        db_url,
        free_port(),
        [("PACS", PACS_PORT)],
        extra=extra,
        web_port=0,
        web_extra=web_extra,
    )
    settings = load_settings(config, env={})
    clock = Clock()
    node = Node(settings, clock)
    started = False
    try:
        destination = f"PACS@127.0.0.1:{PACS_PORT}"
        done, failed, queued, result = seed(node.db, clock(), destination)
        tokens, pks = {}, {}
        for role in ROLES:
            pk, text = accounts.add_token(node.db.session, f"t-{role}", role, None, "", clock())
            tokens[role], pks[role] = text, pk
        if dicom:
            node.start()
        started = True
        if dicom:  # the node's own wiring, as `serve` does it
            url, _ = node.start_web()
            app = None
        else:  # the same wiring, keeping the application for its routes
            app, server = _app_of(node)
            node._web = server
            server.start()
            url = server.url
        audit_log = audit_paths(settings)[0]
        yield WebNode(
            node, url.rstrip("/"), clock, tokens, pks, audit_log, destination,
            done, failed, queued, result, app,
        )  # fmt: skip
    finally:
        if started:
            node.stop()
        else:
            node.db.dispose()
