"""Store: operators' actions racing each other and the node on a real database (SQLite file
and PostgreSQL): two re-runs of one job, a re-run and a bulk retry; the loser is told the
job changed (Conflict), never a database error; a bulk retry takes a bounded batch."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from dicom_ai_node.domain import JobState
from dicom_ai_node.errors import Conflict
from dicom_ai_node.store import actions
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.jobs import fail_job
from dicom_ai_node.store.tables import Job

from .test_store_actions import T0, WINDOW_S, add_job, claim, db, finish

__all__ = ["db"]  # the fixture, shared with test_store_actions


@pytest.fixture
def both_read_first(db: Database) -> Iterator[None]:
    """Hold each INSERT of a job until two are waiting (or a second passed), so that two
    racing transactions have both read what they decide on before either writes."""
    gate = threading.Barrier(2, timeout=1.0)

    def hold(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO JOB "):
            # broken after a second: the other one waits for our lock, go on alone
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()

    event.listen(db.engine, "before_cursor_execute", hold)
    yield
    event.remove(db.engine, "before_cursor_execute", hold)


def race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at once, each in a thread; what each returned or raised."""
    outcomes: list[object] = [None] * len(calls)

    def run(n: int) -> None:
        try:
            outcomes[n] = calls[n]()
        except Exception as exc:  # the outcome under test
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def revisions(db: Database) -> int:
    with db.session() as session:
        return session.scalars(select(func.count()).select_from(Job)).one()


@pytest.mark.usefixtures("both_read_first")
def test_two_reruns_of_one_job_make_one_revision(db: Database) -> None:
    done = claim(db)
    assert finish(db, done)
    outcomes = race(
        lambda: actions.rerun_job(db.session, done.pk, "ann", T0),
        lambda: actions.rerun_job(db.session, done.pk, "bob", T0),
    )
    won = [o for o in outcomes if isinstance(o, int)]
    lost = [o for o in outcomes if not isinstance(o, int)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], Conflict), repr(lost[0])
    assert revisions(db) == 2


@pytest.mark.usefixtures("both_read_first")
def test_a_rerun_racing_a_bulk_retry_makes_one_revision(db: Database) -> None:
    job = claim(db)
    assert finish(db, job, JobState.QUALITY_FAILED)  # made results: a retry is a revision
    outcomes = race(
        lambda: actions.rerun_job(db.session, job.pk, "ann", T0),
        lambda: actions.retry_failed(db.session, "jobs", None, "bob", T0, WINDOW_S),
    )
    assert all(isinstance(o, int | Conflict) for o in outcomes), outcomes
    rerun, retried = outcomes
    assert isinstance(rerun, int) + (retried == 1) == 1, outcomes
    assert revisions(db) == 2


def test_a_bulk_retry_takes_a_bounded_batch(db: Database) -> None:
    first = claim(db)
    assert fail_job(db.session, first, T0, "model crashed")
    for n in range(4):
        pk = add_failed(db, f"m{n}")
        assert pk > first.pk
    assert actions.retry_failed(db.session, "jobs", None, "ann", T0, WINDOW_S, limit=2) == 2
    assert actions.retry_failed(db.session, "jobs", None, "ann", T0, WINDOW_S, limit=2) == 2
    assert actions.retry_failed(db.session, "jobs", None, "ann", T0, WINDOW_S, limit=2) == 1
    assert actions.retry_failed(db.session, "jobs", None, "ann", T0, WINDOW_S, limit=2) == 0
    with db.session() as session:
        states = set(session.scalars(select(Job.state)))
    assert states == {JobState.QUEUED.value}


def add_failed(db: Database, model: str) -> int:
    add_job(db, model)
    job = claim(db, model)
    assert fail_job(db.session, job, T0, "model crashed")
    return job.pk
