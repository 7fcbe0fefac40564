"""Store: a job whose runs never finish ends as failed, with its reason; a heartbeat keeps a
job's lease and a claim that lost its job can no longer write it; due deliveries are found
per destination (SQLite file)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_ai_node.domain import DeliveryState, JobState
from dicom_ai_node.store import actions
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.index import index_instance
from dicom_ai_node.store.jobs import (
    MAX_JOB_ATTEMPTS,
    NewResult,
    claim_job,
    complete_job,
    fail_job,
    renew_lease,
    requeue_running_jobs,
)
from dicom_ai_node.store.outbox import due_deliveries, due_destinations
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


def test_a_claim_says_since_when_the_job_waited_in_the_queue(db: Database) -> None:
    """Since it was made, retried or re-queued by a restart; not since it was made."""
    first = claim_job(db.session, T0 + dt.timedelta(seconds=5), 60.0, ["m"])
    assert first is not None and first.queued_at == first.created_at == T0
    assert fail_job(db.session, first, T0 + dt.timedelta(seconds=9), "model crashed")
    retried_at = T0 + dt.timedelta(days=3)
    assert actions.retry_failed(db.session, "jobs", None, "ann", retried_at, 60.0) == 1
    again = claim_job(db.session, retried_at + dt.timedelta(seconds=5), 60.0, ["m"])
    assert again is not None and again.attempts == 1
    assert (again.created_at, again.queued_at) == (T0, retried_at)
    restarted_at = retried_at + dt.timedelta(minutes=1)
    assert requeue_running_jobs(db.session, restarted_at) == 1
    last = claim_job(db.session, restarted_at + dt.timedelta(seconds=2), 60.0, ["m"])
    assert last is not None and last.queued_at == restarted_at


def test_an_expired_lease_counts_as_a_start(db: Database) -> None:
    """A worker that died without a restart: its lease runs out, another takes the job."""
    first = claim_job(db.session, T0, 60.0, ["m"])
    assert first is not None
    assert claim_job(db.session, T0 + dt.timedelta(seconds=30), 60.0, ["m"]) is None  # leased
    again = claim_job(db.session, T0 + dt.timedelta(seconds=61), 60.0, ["m"])
    assert again is not None and again.attempts == 2


def test_a_heartbeat_keeps_the_lease_of_a_long_job(db: Database) -> None:
    """A job that runs past its first lease is not taken while its worker renews it."""
    job = claim_job(db.session, T0, 60.0, ["m"])
    assert job is not None
    for beat in range(1, 20):  # 19 renewals, 15 s apart: the job has run for 285 s
        assert renew_lease(db.session, job, T0 + dt.timedelta(seconds=15 * beat), 60.0)
        assert claim_job(db.session, T0 + dt.timedelta(seconds=15 * beat + 59), 60.0, ["m"]) is None
    assert complete_job(
        db.session, job, T0 + dt.timedelta(seconds=290), JobState.DONE, "ok", [], [], 60.0, 290.0
    )
    with db.session() as session:
        row = session.scalars(select(Job)).one()
        assert row.state == JobState.DONE.value and row.attempts == 1 and row.lease_until is None


RESULT = NewResult(
    kind="SR",
    sop_instance_uid="1.2.9.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
    series_instance_uid="1.2.9",
    path="results/r1",
)


def test_a_run_that_lost_its_lease_can_neither_renew_nor_record(db: Database) -> None:
    """Worker A froze past its lease; B took the job over. A's late writes change nothing,
    B records the job and its outbox rows once."""
    a = claim_job(db.session, T0, 60.0, ["m"])
    b = claim_job(db.session, T0 + dt.timedelta(seconds=61), 60.0, ["m"])
    assert a is not None and b is not None and (a.attempts, b.attempts) == (1, 2)
    later = T0 + dt.timedelta(seconds=70)
    assert not renew_lease(db.session, a, later, 60.0)
    assert not complete_job(db.session, a, later, JobState.DONE, "a", [RESULT], ["D@h:1"], 9.0, 1.0)
    assert not fail_job(db.session, a, later, "a failed")
    with db.session() as session:
        row = session.scalars(select(Job)).one()
        assert row.state == JobState.RUNNING.value and row.attempts == 2
        assert session.scalars(select(Result)).all() == []
    assert complete_job(db.session, b, later, JobState.DONE, "b", [RESULT], ["D@h:1"], 9.0, 1.0)
    with db.session() as session:
        assert session.scalars(select(Job.reason)).one() == "b"
        assert len(session.scalars(select(Delivery)).all()) == 1


def test_a_run_requeued_by_a_restart_cannot_record_the_job(db: Database) -> None:
    """A restart re-queues the job (the node died while it ran): the old run is fenced out,
    the next claim counts a new attempt."""
    old = claim_job(db.session, T0, 60.0, ["m"])
    assert old is not None
    assert requeue_running_jobs(db.session, T0 + dt.timedelta(seconds=1)) == 1
    assert not fail_job(db.session, old, T0 + dt.timedelta(seconds=2), "late")
    with db.session() as session:
        assert session.scalars(select(Job.state)).one() == JobState.QUEUED.value
    again = claim_job(db.session, T0 + dt.timedelta(seconds=3), 60.0, ["m"])
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
