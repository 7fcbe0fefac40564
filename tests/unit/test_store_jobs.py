"""Store: a job whose runs never finish ends as failed, with its reason; due deliveries are
found per destination (SQLite file)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_ai_node.domain import DeliveryState, JobState
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.index import index_instance
from dicom_ai_node.store.jobs import (
    MAX_JOB_ATTEMPTS,
    claim_job,
    due_deliveries,
    due_destinations,
    requeue_running_jobs,
)
from dicom_ai_node.store.tables import Delivery, Event, Job, Result, Series

from .test_store_index import T0, rec


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """An index holding one series and one queued job for model "m"."""
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    index_instance(database.session, rec(1, T0))
    with database.session.begin() as session:
        series = session.scalars(select(Series)).one()
        session.add(
            Job(
                job_key="m/1/s/g0",
                study_fk=series.study_fk,
                series_fk=series.pk,
                model_name="m",
                model_version="1",
                created_at=T0,
                updated_at=T0,
            )
        )
    yield database
    database.dispose()


def test_a_job_that_never_finishes_fails_after_its_attempts(db: Database) -> None:
    now = T0
    for attempt in range(1, MAX_JOB_ATTEMPTS + 1):  # each run is cut short by a restart
        claimed = claim_job(db.session, now, 60.0, ["m"])
        assert claimed is not None and claimed.attempts == attempt
        now += dt.timedelta(seconds=1)
        assert requeue_running_jobs(db.session, now) == 1
    assert claim_job(db.session, now, 60.0, ["m"]) is None
    with db.session() as session:
        job = session.scalars(select(Job)).one()
        assert job.state == JobState.FAILED.value and "gave up after 3 starts" in job.reason
        kinds = [e.kind for e in session.scalars(select(Event))]
        assert "job-failed" in kinds


def test_an_expired_lease_counts_as_a_start(db: Database) -> None:
    """A worker that died without a restart: its lease runs out, another takes the job."""
    first = claim_job(db.session, T0, 60.0, ["m"])
    assert first is not None
    assert claim_job(db.session, T0 + dt.timedelta(seconds=30), 60.0, ["m"]) is None  # leased
    again = claim_job(db.session, T0 + dt.timedelta(seconds=61), 60.0, ["m"])
    assert again is not None and again.attempts == 2


def test_a_dead_destinations_backlog_never_hides_another_destinations_work(db: Database) -> None:
    """600 results held for a dead destination (more than one query's limit of 500) and
    one new result for a live one: the live one is still found and served."""
    dead, live = "DEAD@127.0.0.1:1", "LIVE@127.0.0.1:2"
    with db.session.begin() as session:
        job_pk = session.scalars(select(Job.pk)).one()
        results = [
            Result(
                job_fk=job_pk,
                kind="SR",
                sop_instance_uid=f"1.2.9.{n}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                series_instance_uid="1.2.9",
                path=f"r{n}",
                created_at=T0,
            )
            for n in range(601)
        ]
        session.add_all(results)
        session.flush()
        session.add_all(
            Delivery(
                result_fk=r.pk,
                destination=live if n == 600 else dead,
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=T0,
                deadline_at=T0 + dt.timedelta(hours=72),
                last_error="",
            )
            for n, r in enumerate(results)
        )
    assert due_destinations(db.session, T0) == [dead, live]
    assert due_destinations(db.session, T0 - dt.timedelta(seconds=1)) == []
    [held] = due_deliveries(db.session, T0, live)
    assert held.sop_instance_uid == "1.2.9.600" and held.deadline_at.tzinfo is not None
    assert len(due_deliveries(db.session, T0, dead)) == 500
