"""Store: the operator's actions on a real database (SQLite file and PostgreSQL): re-run as a
new revision that supersedes the old results, cancel fenced against the running worker,
re-send, bulk retry, force-complete, pause and resume, each in the study's history; and the
association history pruned to its newest rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from dicom_ai_node.domain import DeliveryState, JobState, SeriesState
from dicom_ai_node.errors import Conflict, NotFound
from dicom_ai_node.store import actions
from dicom_ai_node.store.associations import record_association
from dicom_ai_node.store.db import Database, as_utc
from dicom_ai_node.store.index import InstanceRecord, index_instance
from dicom_ai_node.store.jobs import (
    ClaimedJob,
    NewResult,
    claim_job,
    complete_job,
    fail_job,
    renew_lease,
)
from dicom_ai_node.store.outbox import due_deliveries, due_destinations, finish_delivery_attempt
from dicom_ai_node.store.routing import job_key
from dicom_ai_node.store.tables import Association, Delivery, Event, Job, Result, Series

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
PACS = "PACS@127.0.0.1:11112"
OTHER = "VIEW@127.0.0.1:11113"
STUDY, SERIES = "1.2.1", "1.2.1.1"
WINDOW_S = 3600.0


def rec(study: str, series: str, n: int) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=f"{series}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid=study,
        series_instance_uid=series,
        path=f"{series}/{n}",
        size=1,
        sha256="a" * 64,
        received_at=T0,
    )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """One study with one receiving series and one queued job of model "m" on it."""
    database = Database(db_url)
    database.migrate()
    index_instance(database.session, rec(STUDY, SERIES, 1))
    add_job(database, "m")
    yield database
    database.dispose()


def add_job(db: Database, model: str, series_uid: str = SERIES) -> int:
    with db.session.begin() as session:
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == series_uid)
        ).one()
        subject = f"series/{series_uid}"
        job = Job(
            job_key=job_key(model, "1", subject, 0),
            study_fk=series.study_fk,
            series_fk=series.pk,
            model_name=model,
            model_version="1",
            created_at=T0,
            updated_at=T0,
            subject=subject,
            revision=0,
            input_key=f"{series_uid}@g0",
        )
        session.add(job)
        session.flush()
        return job.pk


def claim(db: Database, model: str = "m", now: dt.datetime = T0) -> ClaimedJob:
    claimed = claim_job(db.session, now, 60.0, [model])
    assert claimed is not None
    return claimed


def finish(db: Database, job: ClaimedJob, state: JobState = JobState.DONE) -> bool:
    """The worker's final write: one SR per job, to PACS."""
    result = NewResult(
        "SR", f"2.25.{job.pk}", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.9", f"r{job.pk}"
    )
    return complete_job(
        db.session, job, T0, state, "results encoded", [result], [PACS], WINDOW_S, 1.0
    )


def job_state(db: Database, pk: int) -> str:
    with db.session() as session:
        job = session.get(Job, pk)
        assert job is not None
        return job.state


def actions_of(db: Database) -> list[str]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Event.message)
                .where(Event.kind == actions.ACTION_EVENT, Event.study_instance_uid == STUDY)
                .order_by(Event.pk)
            )
        )


def deliveries(db: Database) -> list[Delivery]:
    with db.session() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.pk)))


def test_a_rerun_is_a_new_revision_that_supersedes_the_results(db: Database) -> None:
    first = claim(db)
    with pytest.raises(Conflict, match="running"):
        actions.rerun_job(db.session, first.pk, "ann", T0)
    assert finish(db, first)
    later = T0 + dt.timedelta(minutes=5)
    new_pk = actions.rerun_job(db.session, first.pk, "ann", later)
    with db.session() as session:
        new = session.get(Job, new_pk)
        assert new is not None
        assert (new.state, new.revision, new.predecessor_fk) == ("queued", 1, first.pk)
        assert (new.subject, new.input_key) == (f"series/{SERIES}", f"{SERIES}@g0")
        assert new.job_key == job_key("m", "1", f"series/{SERIES}", 1) != first.job_key
    assert actions_of(db) == [f"rerun by ann: job {first.pk} (m) as job {new_pk}, revision 1"]
    with pytest.raises(Conflict, match=f"revised by job {new_pk}"):
        actions.rerun_job(db.session, first.pk, "ann", later)
    second = claim(db, now=later)
    assert (second.pk, second.revision, second.predecessor_pk) == (new_pk, 1, first.pk)
    assert finish(db, second)
    assert job_state(db, first.pk) == JobState.SUPERSEDED.value
    with pytest.raises(NotFound):
        actions.rerun_job(db.session, 999, "ann", T0)


def test_a_cancelled_job_is_never_claimed(db: Database) -> None:
    with db.session() as session:
        pk = session.scalars(select(Job.pk)).one()
    assert actions.cancel_job(db.session, pk, "ann", T0) is JobState.QUEUED
    assert claim_job(db.session, T0 + dt.timedelta(hours=1), 60.0, ["m"]) is None
    with pytest.raises(Conflict, match="cancelled"):
        actions.cancel_job(db.session, pk, "ann", T0)
    with pytest.raises(NotFound):
        actions.cancel_job(db.session, 999, "ann", T0)
    assert actions_of(db) == [f"cancel by ann: job {pk} (m, was queued)"]
    # a cancelled job can be run again, as a new revision
    new_pk = actions.rerun_job(db.session, pk, "ann", T0)
    assert claim(db).pk == new_pk


def test_the_worker_of_a_cancelled_job_cannot_write_it(db: Database) -> None:
    running = claim(db)
    assert actions.cancel_job(db.session, running.pk, "bob", T0) is JobState.RUNNING
    assert not renew_lease(db.session, running, T0, 60.0)
    assert not finish(db, running)
    assert not fail_job(db.session, running, T0, "crashed")
    with db.session() as session:
        job = session.get(Job, running.pk)
        assert job is not None and (job.state, job.reason) == ("cancelled", "cancelled by bob")
        assert session.scalars(select(Result)).all() == []
    # its lease running out does not bring it back
    assert claim_job(db.session, T0 + dt.timedelta(hours=1), 60.0, ["m"]) is None


def test_resend_puts_the_delivery_back_and_makes_missing_ones(db: Database) -> None:
    job = claim(db)
    assert finish(db, job)
    (due,) = due_deliveries(db.session, T0)
    assert finish_delivery_attempt(
        db.session, due, T0, delivered=True, status=0, error="", next_attempt_at=None
    )
    (row,) = deliveries(db)
    assert (row.state, row.attempts) == ("delivered", 1) and row.last_attempt_at is not None
    assert as_utc(row.last_attempt_at) == T0
    with db.session() as session:
        result_pk = session.scalars(select(Result.pk)).one()
    later = T0 + dt.timedelta(minutes=1)
    assert actions.resend(db.session, PACS, "ann", later, WINDOW_S, result_pk=result_pk) == 1
    assert actions.resend(db.session, OTHER, "ann", later, WINDOW_S, job_pk=job.pk) == 1
    rows = deliveries(db)
    assert [(d.destination, d.state, d.attempts) for d in rows] == [
        (PACS, "pending", 0),
        (OTHER, "pending", 0),
    ]
    for d in rows:
        assert as_utc(d.next_attempt_at) == later
        assert as_utc(d.deadline_at) == later + dt.timedelta(hours=1)
    assert {d.destination for d in due_deliveries(db.session, later)} == {PACS, OTHER}
    assert actions_of(db) == [
        f"resend by ann: result {result_pk} to {PACS}",
        f"resend by ann: job {job.pk} (1 results) to {OTHER}",
    ]
    with pytest.raises(NotFound):
        actions.resend(db.session, PACS, "ann", later, WINDOW_S, result_pk=999)
    with pytest.raises(ValueError, match="either"):
        actions.resend(db.session, PACS, "ann", later, WINDOW_S)
    other_job = add_job(db, "n")
    with pytest.raises(Conflict, match="no results"):
        actions.resend(db.session, PACS, "ann", later, WINDOW_S, job_pk=other_job)


def test_an_attempt_in_flight_during_a_resend_is_not_recorded(db: Database) -> None:
    assert finish(db, claim(db))
    (due,) = due_deliveries(db.session, T0)
    assert finish_delivery_attempt(
        db.session, due, T0, delivered=False, status=None, error="refused", next_attempt_at=T0
    )
    (in_flight,) = due_deliveries(db.session, T0)  # attempt 2 starts...
    with db.session() as session:
        result_pk = session.scalars(select(Result.pk)).one()
    actions.resend(db.session, PACS, "ann", T0, WINDOW_S, result_pk=result_pk)  # ...meanwhile
    assert not finish_delivery_attempt(
        db.session, in_flight, T0, delivered=False, status=None, error="x", next_attempt_at=None
    )
    (row,) = deliveries(db)
    assert (row.state, row.attempts) == ("pending", 0)


def test_a_first_attempt_in_flight_during_a_resend_is_not_recorded(db: Database) -> None:
    assert finish(db, claim(db))
    (in_flight,) = due_deliveries(db.session, T0)  # attempt 1 starts, from 0 attempts...
    with db.session() as session:
        result_pk = session.scalars(select(Result.pk)).one()
    later = T0 + dt.timedelta(seconds=1)
    actions.resend(db.session, PACS, "ann", later, WINDOW_S, result_pk=result_pk)  # ...meanwhile
    assert not finish_delivery_attempt(
        db.session, in_flight, later, delivered=False, status=None, error="x", next_attempt_at=None
    )
    (row,) = deliveries(db)
    assert (row.state, row.attempts, row.resends) == ("pending", 0, 1)
    assert as_utc(row.next_attempt_at) == later
    (again,) = due_deliveries(db.session, later)
    assert (again.attempts, again.resends) == (0, 1)
    assert finish_delivery_attempt(
        db.session, again, later, delivered=True, status=0, error="", next_attempt_at=None
    )


def test_only_the_standing_results_are_sent_again(db: Database) -> None:
    first = claim(db)
    assert finish(db, first)
    revision = actions.rerun_job(db.session, first.pk, "ann", T0)
    with pytest.raises(Conflict, match=f"revised by job {revision}"):
        actions.resend(db.session, PACS, "ann", T0, WINDOW_S, job_pk=first.pk)
    assert finish(db, claim(db))  # the revision is done: the first results are superseded
    with db.session() as session:
        old = session.scalars(select(Result.pk).where(Result.job_fk == first.pk)).one()
    with pytest.raises(Conflict, match="superseded"):
        actions.resend(db.session, PACS, "ann", T0, WINDOW_S, result_pk=old)
    assert actions.resend(db.session, PACS, "ann", T0, WINDOW_S, job_pk=revision) == 1
    # a later revision that failed leaves the results standing: they may go again
    actions.rerun_job(db.session, revision, "ann", T0)
    assert fail_job(db.session, claim(db), T0, "model crashed")
    assert actions.resend(db.session, PACS, "ann", T0, WINDOW_S, job_pk=revision) == 1


def fail_delivery(db: Database, error: str) -> None:
    for due in due_deliveries(db.session, T0):
        finish_delivery_attempt(
            db.session, due, T0, delivered=False, status=None, error=error, next_attempt_at=None
        )


def test_retry_failed_deliveries_by_cause(db: Database) -> None:
    assert finish(db, claim(db))
    fail_delivery(db, "association rejected")
    assert deliveries(db)[0].state == DeliveryState.FAILED.value
    later = T0 + dt.timedelta(hours=2)
    assert actions.retry_failed(db.session, "deliveries", "timeout", "ann", later, WINDOW_S) == 0
    assert (
        actions.retry_failed(
            db.session, "deliveries", "association rejected", "ann", later, WINDOW_S
        )
        == 1
    )
    (row,) = deliveries(db)
    assert (row.state, row.attempts, as_utc(row.next_attempt_at)) == ("pending", 0, later)
    assert len(due_deliveries(db.session, later)) == 1
    assert actions_of(db)[-1].startswith("retry by ann: result ")
    with pytest.raises(ValueError, match="jobs, deliveries"):
        actions.retry_failed(db.session, "studies", None, "ann", later, WINDOW_S)


def test_retry_failed_jobs_requeues_the_latest_or_reruns_one_with_results(db: Database) -> None:
    failed = claim(db)
    assert fail_job(db.session, failed, T0, "model crashed")
    quality = add_job(db, "q")
    assert finish(db, claim(db, "q"), JobState.QUALITY_FAILED)
    assert actions.retry_failed(db.session, "jobs", "other cause", "ann", T0, WINDOW_S) == 0
    assert actions.retry_failed(db.session, "jobs", None, "ann", T0, WINDOW_S) == 2
    with db.session() as session:
        again = session.get(Job, failed.pk)
        assert again is not None and (again.state, again.attempts) == ("queued", 0)
        revision = session.scalars(select(Job).where(Job.predecessor_fk == quality)).one()
        assert (revision.state, revision.revision) == ("queued", 1)
    assert job_state(db, quality) == JobState.QUALITY_FAILED.value
    assert claim(db).pk == failed.pk  # runs again, from its first attempt
    # a failure already revised is not retried twice
    assert actions.retry_failed(db.session, "jobs", None, "ann", T0, WINDOW_S) == 0


def test_force_complete_series_and_study(db: Database) -> None:
    index_instance(db.session, rec(STUDY, "1.2.1.2", 1))
    index_instance(db.session, rec(STUDY, "1.2.1.3", 1))
    assert actions.force_complete(db.session, "ann", T0, series_uid=SERIES) == [SERIES]
    with pytest.raises(Conflict, match="not receiving"):
        actions.force_complete(db.session, "ann", T0, series_uid=SERIES)
    done = actions.force_complete(db.session, "ann", T0, study_uid=STUDY)
    assert done == ["1.2.1.2", "1.2.1.3"]
    with db.session() as session:
        rows = session.scalars(select(Series)).all()
        assert {(s.state, s.reason) for s in rows} == {
            (SeriesState.COMPLETE.value, "forced complete by ann")
        }
        assert all(s.completed_at is not None for s in rows)
    with pytest.raises(Conflict):
        actions.force_complete(db.session, "ann", T0, study_uid=STUDY)
    with pytest.raises(NotFound):
        actions.force_complete(db.session, "ann", T0, study_uid="9.9")
    assert actions_of(db) == [f"force-complete by ann: series {u}" for u in ("1.2.1.1", *done)]


def test_a_paused_model_waits_and_a_paused_destination_gets_nothing(db: Database) -> None:
    actions.pause(db.session, "model", "m", "ann", T0)
    with pytest.raises(Conflict, match="paused already"):
        actions.pause(db.session, "model", "m", "ann", T0)
    assert actions.paused(db.session, "model") == {"m"}
    assert claim_job(db.session, T0, 60.0, ["m"]) is None
    actions.resume(db.session, "model", "m", "ann", T0)
    with pytest.raises(Conflict, match="not paused"):
        actions.resume(db.session, "model", "m", "ann", T0)
    assert finish(db, claim(db))
    actions.pause(db.session, actions.PauseKind.DESTINATION, PACS, "bob", T0)
    assert due_deliveries(db.session, T0) == [] and due_destinations(db.session, T0) == []
    (info,) = actions.pauses(db.session)
    assert (info.kind, info.name, info.paused_at, info.username) == ("destination", PACS, T0, "bob")
    actions.resume(db.session, "destination", PACS, "bob", T0)
    assert due_destinations(db.session, T0) == [PACS]
    assert actions.paused(db.session, "destination") == set()
    with pytest.raises(ValueError, match="model, destination"):
        actions.pause(db.session, "series", "x", "ann", T0)
    with db.session() as session:
        messages = session.scalars(
            select(Event.message).where(Event.kind == "action").order_by(Event.pk)
        ).all()
    assert messages == [
        "pause by ann: model m",
        "resume by ann: model m",
        f"pause by bob: destination {PACS}",
        f"resume by bob: destination {PACS}",
    ]


def test_the_association_history_keeps_the_newest_rows(db: Database) -> None:
    for n in range(5):
        record_association(
            db.session,
            started_at=T0,
            ended_at=T0 + dt.timedelta(seconds=n),
            calling_ae_title=f"CT{n}",
            called_ae_title="NODE",
            address=f"10.0.0.{n}:4000",
            instances=n,
            outcome="completed" if n else "refused",
            reason="" if n else "not in the allow-list",
            keep=3,
        )
    with db.session() as session:
        kept = session.scalars(select(Association.calling_ae_title).order_by(Association.pk))
        assert list(kept) == ["CT2", "CT3", "CT4"]
    with pytest.raises(ValueError, match="completed, aborted, rejected, refused"):
        record_association(
            db.session,
            started_at=T0,
            ended_at=T0,
            calling_ae_title="",
            called_ae_title="",
            address="",
            instances=0,
            outcome="timeout",
        )
