"""Store: indexing, duplicates, completion from database state, late instances (SQLite file)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_ai_node.assemble.sweep import complete_due_series
from dicom_ai_node.domain import SeriesState
from dicom_ai_node.errors import StorageError
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.files import FileStore, valid_uid
from dicom_ai_node.store.index import (
    IndexOutcome,
    InstanceRecord,
    SeriesAttrs,
    index_instance,
)
from dicom_ai_node.store.tables import Event, Series

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    return database


def rec(n: int, at: dt.datetime, sha: str = "a", expected: int | None = None) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=f"1.2.3.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.1",
        series_instance_uid="1.2.2",
        path=f"p{n}",
        size=1,
        sha256=sha * 64,
        received_at=at,
        series=SeriesAttrs(expected_count=expected),
    )


def series(db: Database) -> Series:
    with db.session() as session:
        return session.scalars(select(Series)).one()


def test_duplicate_and_conflict(db: Database) -> None:
    assert index_instance(db.session, rec(1, T0)) is IndexOutcome.NEW
    assert index_instance(db.session, rec(1, T0)) is IndexOutcome.DUPLICATE
    assert index_instance(db.session, rec(1, T0, sha="b")) is IndexOutcome.CONFLICT
    assert series(db).instance_count == 1


def test_quiet_period_from_database_state(db: Database) -> None:
    for n in range(3):
        index_instance(db.session, rec(n, T0 + dt.timedelta(seconds=n)))
    assert complete_due_series(db.session, T0 + dt.timedelta(seconds=11), 10) == []
    assert complete_due_series(db.session, T0 + dt.timedelta(seconds=12), 10) == ["1.2.2"]
    assert series(db).state == SeriesState.COMPLETE.value
    # a new process (new engine) sees the same state: nothing lives in memory
    again = Database(db.url)
    assert complete_due_series(again.session, T0 + dt.timedelta(seconds=60), 10) == []


def test_expected_count_completes_without_waiting(db: Database) -> None:
    index_instance(db.session, rec(1, T0, expected=2))
    assert series(db).state == SeriesState.RECEIVING.value
    index_instance(db.session, rec(2, T0, expected=2))
    assert series(db).state == SeriesState.COMPLETE.value


@pytest.mark.parametrize(
    ("policy", "state", "generation"), [("rerun", "receiving", 1), ("record", "complete", 0)]
)
def test_late_instance_policy(db: Database, policy: str, state: str, generation: int) -> None:
    index_instance(db.session, rec(1, T0))
    complete_due_series(db.session, T0 + dt.timedelta(seconds=30), 10)
    index_instance(db.session, rec(2, T0 + dt.timedelta(seconds=40)), late_policy=policy)
    s = series(db)
    assert (s.state, s.generation, s.late_instances, s.instance_count) == (state, generation, 1, 2)
    with db.session() as session:
        assert session.scalars(select(Event.kind)).all() == ["late-instance"]


def test_uids_that_could_escape_are_refused(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    for bad in ("../1.2", "1.2/3", "1..2", "", "1.02", "a.b", "1" * 65):
        assert not valid_uid(bad)
        with pytest.raises(StorageError):
            files.instance_path(bad, "1.2", "1.3", "0" * 64)
    assert files.instance_path("1.2", "1.3", "1.4", "ab" * 32).startswith("instances/1.2/1.3/1.4.")


def test_atomic_write_leaves_no_temp_and_sweeps_leftovers(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    assert files.write("instances/1/2/3.dcm", [b"abc", b"def"]) == 6
    assert (tmp_path / "instances/1/2/3.dcm").read_bytes() == b"abcdef"
    assert not list(files.tmp.iterdir())
    (files.tmp / "crash.part").write_bytes(b"x")
    assert files.sweep_temp() == 1
