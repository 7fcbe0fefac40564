"""Assemble: the sweep decides once per study, revises on late or better data, never routes
the node's own results and keeps a job per series for ``select: each`` rules (SQLite file,
time passed in)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dicom_ai_node.assemble import sweep as assemble_sweep
from dicom_ai_node.assemble.sweep import Assembler, complete_due_series
from dicom_ai_node.domain import BodyPart, InputSpec, JobState, SeriesInfo, SeriesState
from dicom_ai_node.identity import MANUFACTURER, device_uid
from dicom_ai_node.route.load import load_rules
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.index import (
    IndexOutcome,
    InstanceRecord,
    SeriesAttrs,
    index_instance,
)
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job, fail_job, replaced_reports
from dicom_ai_node.store.tables import Event, Job, Series

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
STUDY = "1.2.9"
CT = "1.2.840.10008.5.1.4.1.1.2"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
RULES = """
rules:
  - name: lungs
    model: lungs
    when: {modality: CT, body_part: CHEST, axial: true}
  - name: views
    model: views
    select: each
    when: {modality: DX}
"""
SPECS = {
    "lungs": InputSpec(modalities=frozenset({"CT"}), require_axial=True),
    "views": InputSpec(modalities=frozenset({"DX"})),
}
VERSIONS = {"lungs": "1.0", "views": "2.0"}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def header(
    series_uid: str, modality: str = "CT", study: str = STUDY, **extra: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series_uid,
        "Modality": modality,
        "BodyPartExamined": "CHEST",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PixelSpacing": [0.7, 0.7],
    }
    return values | extra


def send(
    db: Database,
    series_uid: str,
    count: int,
    when: float,
    first: int = 0,
    expected: int | None = None,
    **extra: Any,
) -> list[IndexOutcome]:
    """Index ``count`` instances of a series, all received at ``when`` seconds."""
    head = header(series_uid, **extra)
    sop_class = DX if head["Modality"] == "DX" else CT
    return [
        index_instance(
            db.session,
            InstanceRecord(
                sop_instance_uid=f"{series_uid}.{n}",
                sop_class_uid=sop_class,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                study_instance_uid=head["StudyInstanceUID"],
                series_instance_uid=series_uid,
                path=f"{series_uid}/{n}",
                size=1,
                sha256="a" * 64,
                received_at=at(when),
                series=SeriesAttrs(modality=head["Modality"], header=head, expected_count=expected),
            ),
        )
        for n in range(first, first + count)
    ]


THICK = {"SliceThickness": 5.0, "SeriesNumber": 2, "SeriesDescription": "Body 5mm"}
THIN = {"SliceThickness": 2.5, "SeriesNumber": 3, "SeriesDescription": "Lung 2.5mm"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    yield database
    database.dispose()


def assembler(db: Database, study_quiet_s: float = 0.0, policy: str = "rerun") -> Assembler:
    rules = load_rules(RULES, VERSIONS)
    return Assembler(db, rules, SPECS, VERSIONS, 10.0, study_quiet_s, policy)


def jobs(db: Database) -> list[Job]:
    with db.session() as session:
        return list(session.scalars(select(Job).order_by(Job.pk)))


def states(db: Database) -> dict[str, tuple[str, str]]:
    with db.session() as session:
        return {s.series_instance_uid: (s.state, s.reason) for s in session.scalars(select(Series))}


def events(db: Database, kind: str) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(Event.message).where(Event.kind == kind)))


def finish_next_job(db: Database, now: dt.datetime) -> Job:
    """A worker runs the oldest runnable job to DONE (no result objects)."""
    claimed = claim_job(db.session, now, 60.0, list(VERSIONS))
    assert claimed is not None
    assert complete_job(db.session, claimed, now, JobState.DONE, "ok", [], [], 60.0, 1.0)
    with db.session() as session:
        job = session.get(Job, claimed.pk)
        assert job is not None
        return job


def test_a_single_series_study_waits_no_longer_than_the_series_quiet_period(
    db: Database,
) -> None:
    sweep = assembler(db)  # study quiet period 0: the series quiet period
    send(db, "1.1", 30, 0.0, **THIN)
    sweep.sweep(at(9.9))
    assert jobs(db) == [] and states(db)["1.1"][0] == SeriesState.RECEIVING
    sweep.sweep(at(10.0))
    (job,) = jobs(db)
    assert (job.model_name, job.subject, job.revision) == ("lungs", f"study/{STUDY}", 0)
    assert job.job_key == f"lungs/1.0/study/{STUDY}/r0" and job.input_key == "1.1@g0"
    state, reason = states(db)["1.1"]
    assert state == SeriesState.ROUTED and reason.startswith("routed to lungs; study quiet")


@pytest.mark.parametrize("order", ["thick first", "thin first"])
def test_series_forwarded_seconds_apart_make_one_job_on_the_best(db: Database, order: str) -> None:
    sweep = assembler(db, study_quiet_s=30.0)
    first, second = (THICK, THIN) if order == "thick first" else (THIN, THICK)
    send(db, "1.2" if first is THICK else "1.3", 40, 0.0, **first)
    sweep.sweep(at(10.0))  # the first series is complete: it waits for the study
    assert jobs(db) == [] and {s for s, _ in states(db).values()} == {SeriesState.WAITING}
    send(db, "1.3" if second is THIN else "1.2", 80, 15.0, **second)
    for t in (25.0, 44.9):
        sweep.sweep(at(t))
    assert jobs(db) == []
    sweep.sweep(at(45.0))  # 30 s after the study's last instance
    (job,) = jobs(db)
    assert job.input_key == "1.3@g0" and job.explanation["series"] == ["1.3"]
    assert job.explanation["selection"][0].startswith("chosen 1.3 (#3 'Lung 2.5mm')")
    assert "preferred over 1.2 (#2 'Body 5mm'): thinner slices" in job.explanation["selection"][1]
    found = states(db)
    assert found["1.3"][0] == SeriesState.ROUTED
    assert found["1.2"][0] == SeriesState.NOT_ROUTED
    assert found["1.2"][1].startswith("a better series was chosen for model lungs: 1.3")
    assert events(db, "not-routed") == [found["1.2"][1]]
    sweep.sweep(at(100.0))
    assert len(jobs(db)) == 1


def test_a_better_series_after_results_makes_one_revision(db: Database) -> None:
    sweep = assembler(db)
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    first = finish_next_job(db, at(11.0))
    send(db, "1.3", 80, 20.0, **THIN)
    sweep.sweep(at(30.0))
    old, new = jobs(db)
    assert (new.revision, new.predecessor_fk, new.input_key) == (1, first.pk, "1.3@g0")
    assert new.job_key == f"lungs/1.0/study/{STUDY}/r1" and new.subject == old.subject
    assert events(db, "revision") == [
        f"job {new.pk}: lungs 1.0 revision 1 on 1.3 (revision 1 supersedes job {first.pk} (done))"
    ]
    finish_next_job(db, at(31.0))
    assert [j.state for j in jobs(db)] == [JobState.SUPERSEDED, JobState.DONE]
    send(db, "1.2", 40, 40.0)  # the whole study forwarded again: duplicates, nothing new
    send(db, "1.3", 80, 40.0)
    sweep.sweep(at(60.0))
    assert len(jobs(db)) == 2


def test_with_policy_record_better_data_after_results_is_only_recorded(db: Database) -> None:
    sweep = assembler(db, policy="record")
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    finish_next_job(db, at(11.0))
    send(db, "1.3", 80, 20.0, **THIN)
    sweep.sweep(at(30.0))
    (job,) = jobs(db)
    assert job.state == JobState.DONE and job.input_key == "1.2@g0"
    (message,) = events(db, "late-data")
    assert message.startswith("lungs: 1.3 would now be chosen; job ")
    found = states(db)
    assert found["1.2"][0] == SeriesState.ROUTED
    assert found["1.3"][0] == SeriesState.NOT_ROUTED
    assert found["1.3"][1].startswith("would now be chosen for lungs (job ")


def test_late_instances_of_the_chosen_series_revise_its_results(db: Database) -> None:
    sweep = assembler(db)
    send(db, "1.3", 40, 0.0, **THIN)
    sweep.sweep(at(10.0))
    finish_next_job(db, at(11.0))
    send(db, "1.3", 5, 20.0, first=40)  # re-opens the series: generation 1
    sweep.sweep(at(29.0))
    assert len(jobs(db)) == 1
    sweep.sweep(at(30.0))
    old, new = jobs(db)
    assert (new.revision, new.predecessor_fk, new.input_key) == (1, old.pk, "1.3@g1")


def test_a_queued_job_takes_a_better_series_instead_of_a_revision(db: Database) -> None:
    sweep = assembler(db)
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    send(db, "1.3", 80, 12.0, **THIN)
    sweep.sweep(at(22.0))
    (job,) = jobs(db)  # no worker took it yet: nothing was made from the thick series
    assert (job.revision, job.input_key, job.state) == (0, "1.3@g0", JobState.QUEUED)


def test_the_nodes_own_results_are_never_routed_nor_hold_the_study(db: Database) -> None:
    sweep = assembler(db)
    send(db, "1.3", 40, 0.0, **THIN)
    sweep.sweep(at(10.0))
    finish_next_job(db, at(11.0))
    mine = {
        "Manufacturer": MANUFACTURER,
        "ManufacturerModelName": "lungs",
        "SoftwareVersions": "1.0",
        "DeviceUID": device_uid("lungs", "1.0"),
        "SliceThickness": 1.0,  # would win, were it an input
    }
    send(db, "9.1", 40, 20.0, **mine)  # a PACS forwards the node's own output back
    send(db, "9.2", 1, 31.0, **mine)  # still arriving when the sweep runs
    sweep.sweep(at(30.0))
    sweep.sweep(at(41.0))
    assert len(jobs(db)) == 1
    state, reason = states(db)["9.1"]
    assert state == SeriesState.NOT_ROUTED
    assert reason == "made by this node (lungs 1.0): its own results are never routed"
    forged = mine | {"DeviceUID": "1.2.3.4"}  # the manufacturer's name alone is not enough
    send(db, "9.3", 40, 50.0, **forged)
    sweep.sweep(at(60.0))
    assert len(jobs(db)) == 2


def test_rules_that_select_each_series_get_a_job_per_series_at_once(db: Database) -> None:
    sweep = assembler(db, study_quiet_s=600.0)
    send(db, "2.1", 1, 0.0, modality="DX")
    send(db, "2.2", 1, 1.0, modality="DX")
    sweep.sweep(at(11.0))  # both series complete; the study is far from quiet
    found = jobs(db)
    assert [(j.model_name, j.subject, j.input_key) for j in found] == [
        ("views", "series/2.1", "2.1@g0"),
        ("views", "series/2.2", "2.2@g0"),
    ]
    assert states(db)["2.1"] == (
        SeriesState.WAITING,
        "routed to views (each matching series); complete; waiting for the study to be quiet",
    )
    sweep.sweep(at(601.0))
    assert len(jobs(db)) == 2 and {s for s, _ in states(db).values()} == {SeriesState.ROUTED}


def test_announced_study_counts_decide_without_waiting(db: Database) -> None:
    sweep = assembler(db, study_quiet_s=600.0)
    counts = {"NumberOfStudyRelatedSeries": 2}
    send(db, "1.2", 40, 0.0, expected=40, **THICK, **counts)
    send(db, "1.3", 80, 1.0, expected=80, **THIN, **counts)
    sweep.sweep(at(1.5))  # both series reached their expected counts, the study its series
    (job,) = jobs(db)
    assert job.input_key == "1.3@g0"
    assert "expected series count 2 reached" in states(db)["1.3"][1]


def test_a_revision_waits_for_the_job_it_revises(db: Database) -> None:
    sweep = assembler(db)
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    running = claim_job(db.session, at(11.0), 60.0, list(VERSIONS))
    assert running is not None and running.revision == 0
    send(db, "1.3", 80, 12.0, **THIN)
    sweep.sweep(at(22.0))  # results are being made: a revision, not a replacement
    assert [(j.revision, j.state) for j in jobs(db)] == [(0, "running"), (1, "queued")]
    assert claim_job(db.session, at(23.0), 60.0, list(VERSIONS)) is None
    assert complete_job(db.session, running, at(24.0), JobState.DONE, "ok", [], [], 60.0, 1.0)
    revision = claim_job(db.session, at(25.0), 60.0, list(VERSIONS))
    assert revision is not None and (revision.revision, revision.predecessor_pk) == (
        1,
        running.pk,
    )


def test_a_revision_that_cannot_analyse_its_input_leaves_the_results_standing(
    db: Database,
) -> None:
    sweep = assembler(db)
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    finish_next_job(db, at(11.0))
    send(db, "1.3", 80, 20.0, **THIN)  # preferred by its headers, unusable when read
    sweep.sweep(at(30.0))
    revision = claim_job(db.session, at(31.0), 60.0, list(VERSIONS))
    assert revision is not None
    assert complete_job(
        db.session, revision, at(32.0), JobState.QUALITY_FAILED, "uneven", [], [], 60.0, 1.0
    )
    assert [(j.revision, j.state) for j in jobs(db)] == [(0, "done"), (1, "quality_failed")]


def test_a_revision_replaces_the_reports_back_to_the_last_results_that_stood(
    db: Database,
) -> None:
    sweep = assembler(db)
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    first = claim_job(db.session, at(11.0), 60.0, list(VERSIONS))
    assert first is not None
    reports = [NewResult("SR", "5.1", SR_CLASS, "5", "r/5.1.dcm")]
    assert complete_job(db.session, first, at(12.0), JobState.DONE, "ok", reports, [], 60, 1)
    send(db, "1.3", 80, 20.0, **THIN)
    sweep.sweep(at(30.0))  # revision 1 ...
    failing = claim_job(db.session, at(31.0), 60.0, list(VERSIONS))
    assert failing is not None and fail_job(db.session, failing, at(32.0), "out of memory")
    send(db, "1.3", 5, 40.0, first=80)
    sweep.sweep(at(50.0))  # ... failed: revision 2 revises it, and replaces revision 0's SR
    last = jobs(db)[-1]
    assert (last.revision, last.predecessor_fk) == (2, failing.pk)
    assert replaced_reports(db.session, last.predecessor_fk) == ["r/5.1.dcm"]


def test_with_policy_record_a_failed_job_is_still_run_again_on_better_data(
    db: Database,
) -> None:
    sweep = assembler(db, policy="record")
    send(db, "1.2", 40, 0.0, **THICK)
    sweep.sweep(at(10.0))
    failed = claim_job(db.session, at(11.0), 60.0, list(VERSIONS))
    assert failed is not None and fail_job(db.session, failed, at(12.0), "boom")
    send(db, "1.3", 80, 20.0, **THIN)
    sweep.sweep(at(30.0))  # nothing was sent for the study: it gets results after all
    assert [(j.revision, j.input_key) for j in jobs(db)] == [(0, "1.2@g0"), (1, "1.3@g0")]


def test_a_series_is_not_completed_by_a_sweep_an_instance_overtook(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(db, "1.3", 40, 0.0, **THIN)
    real = assemble_sweep.completion_reason

    def meanwhile(**kwargs: Any) -> str | None:  # between the sweep's read and its write
        send(db, "1.3", 1, 10.0, first=40)
        return real(**kwargs)

    monkeypatch.setattr(assemble_sweep, "completion_reason", meanwhile)
    assert complete_due_series(db.session, at(10.0), 10.0) == []
    assert states(db)["1.3"][0] == SeriesState.RECEIVING


def test_a_study_whose_routing_fails_never_stops_the_others(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def classifier(info: SeriesInfo) -> tuple[BodyPart, float] | None:
        raise RuntimeError(f"cannot read {info.series_instance_uid}")

    rules = load_rules(RULES, VERSIONS)
    sweep = Assembler(db, rules, SPECS, VERSIONS, 10.0, 0.0, "rerun", classifier)
    # another study whose series names no region: the classifier is asked, and fails
    send(db, "1.1", 30, 0.0, study="1.2.8", BodyPartExamined="")
    send(db, "1.3", 30, 0.0, **THIN)
    for t in (10.0, 11.0, 12.0):
        sweep.sweep(at(t))
    assert [j.input_key for j in jobs(db)] == ["1.3@g0"]
    assert states(db)["1.1"][0] == SeriesState.COMPLETE  # tried again on each sweep
    assert caplog.text.count("routing series 1 failed; tried again each sweep") == 1


def test_a_job_made_before_study_subjects_is_revised_not_duplicated(db: Database) -> None:
    send(db, "1.2", 40, 0.0, **THICK)
    with db.session.begin() as session:  # as migration 0002 leaves a job of an older node
        series = session.scalars(select(Series)).one()
        series.state = SeriesState.ROUTED
        session.add(
            Job(
                job_key="lungs/1.0/1.2/g0",
                study_fk=series.study_fk,
                series_fk=series.pk,
                model_name="lungs",
                model_version="1.0",
                state=JobState.DONE,
                created_at=T0,
                updated_at=T0,
                subject="series/1.2",
                input_key="1.2@g0",
            )
        )
    sweep = assembler(db)
    send(db, "1.3", 80, 20.0, **THIN)
    sweep.sweep(at(30.0))
    legacy, revision = jobs(db)
    assert (revision.subject, revision.revision) == (f"study/{STUDY}", 1)
    assert revision.predecessor_fk == legacy.pk
    finish_next_job(db, at(31.0))
    assert [j.state for j in jobs(db)] == [JobState.SUPERSEDED, JobState.DONE]
