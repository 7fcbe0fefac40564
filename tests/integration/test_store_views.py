"""Store: what the operator's screens read (real databases): the status, the studies and jobs
lists with their filters and cursors, a study's timeline from received to delivered, the
failures by cause, the destinations, the associations and a result's files; no patient
name, ID or birth date in anything read without ``with_patient``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from dicom_ai_node.domain import (
    DeliveryState,
    JobInput,
    JobState,
    PlannedJob,
    SeriesState,
    Step,
)
from dicom_ai_node.store import overview, peers, rows, timeline, views
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.index import (
    InstanceRecord,
    SeriesAttrs,
    complete_series,
    index_instance,
    record_event,
)
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job, fail_job
from dicom_ai_node.store.outbox import due_deliveries, finish_delivery_attempt
from dicom_ai_node.store.routing import SeriesDecision, record_routing, stored_study
from dicom_ai_node.store.tables import Association, Job, Pause, Study
from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
    phi_canaries_in,
)

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
PACS, ARCHIVE, IDLE = "PACS@10.0.0.5:104", "ARCH@10.0.0.6:11112", "IDLE@10.0.0.7:104"
STUDY_A, STUDY_B = "1.2.826.0.1.1", "1.2.826.0.1.2"
A1, A2, B1 = f"{STUDY_A}.1", f"{STUDY_A}.2", f"{STUDY_B}.1"
CHOSEN = [
    f"chosen {A1} (#1 'Lung'): ORIGINAL, axial, 1 mm slices, 3 slices",
    f"preferred over {A2} (#2): thinner slices (1 mm vs 5 mm)",
]
RULES = [
    "rule 'chest ct' -> m: matched (1 condition); input spec accepts the series",
    "rule 'brain' -> n: no match: BodyPartExamined is CHEST",
]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def rec(
    study: str, series: str, n: int, when: dt.datetime, ae: str, **attrs: object
) -> InstanceRecord:
    header = {"PatientName": CANARY_PATIENT_NAME, "PatientID": CANARY_PATIENT_ID}
    header |= {"PatientBirthDate": CANARY_BIRTH_DATE, "Modality": "CT"}
    return InstanceRecord(
        sop_instance_uid=f"{series}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid=study,
        series_instance_uid=series,
        path=f"in/{series}/{n}.dcm",
        size=1,
        sha256=f"{n:064d}",
        received_at=when,
        calling_ae_title=ae,
        instance_number=4 - n,  # sent in reverse order
        series=SeriesAttrs(
            patient_id=CANARY_PATIENT_ID,
            patient_name=CANARY_PATIENT_NAME,
            modality="CT",
            header=header,
            **attrs,  # type: ignore[arg-type]
        ),
    )


@dataclass(frozen=True)
class Seeded:
    db: Database
    job_a: int  # done, SEG + SR, delivered / failed / retrying
    job_b: int  # failed
    job_q: int  # queued


def _route(db: Database, study_uid: str, model: str, explanation: dict[str, object]) -> None:
    """The assembler's decision for a complete study: its first series to ``model``."""
    pk = _study_pk(db, study_uid)
    study = stored_study(db.session, pk)
    assert study is not None
    first, *others = study.series
    plan = PlannedJob(
        Step.NEW,
        JobInput(
            model=model,
            subject=f"study/{study_uid}",
            series_instance_uids=(first.series_instance_uid,),
            input_key=f"{first.series_instance_uid}@g0",
            explanation=explanation,
        ),
        None,
        0,
        "new",
    )
    decisions = [SeriesDecision(first, SeriesState.ROUTED, f"routed to {model}; quiet")]
    decisions += [SeriesDecision(s, SeriesState.NOT_ROUTED, "a better series") for s in others]
    assert record_routing(db.session, at(30), [plan], decisions, {model: "1.0"})


def _study_pk(db: Database, study_uid: str) -> int:
    with db.session() as session:
        return session.scalars(select(Study.pk).where(Study.study_instance_uid == study_uid)).one()


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    """Study A (two series from CT_A): routed to m, done, one SEG and one SR sent to two
    destinations; study B (one series from CT_B): m's job failed, q's job queued."""
    db = Database(db_url)
    db.migrate()
    for n in (1, 2, 3):
        index_instance(
            db.session,
            rec(STUDY_A, A1, n, at(n), "CT_A", study_date="20260101", accession_number="ACC-A"),
        )
    index_instance(
        db.session,
        rec(STUDY_A, A2, 1, at(4), "CT_A2", study_date="20260101", accession_number="ACC-A"),
    )
    index_instance(
        db.session,
        rec(STUDY_B, B1, 1, at(5), "CT_B", study_date="20260105", accession_number="ACC-B"),
    )
    assert len(complete_series(db.session, at(20), at(20), lambda s: "quiet for 15 s")) == 3
    _route(db, STUDY_A, "m", {"routing": RULES, "series": [A1], "selection": CHOSEN})
    _route(db, STUDY_B, "m", {})
    claimed = claim_job(db.session, at(31), 60.0, ["m"])
    assert claimed is not None and claimed.study_instance_uid == STUDY_A
    made = [
        NewResult(kind, f"2.25.{i}", "1.2.840.10008.5.1.4.1.1.66.4", "2.25.9", f"out/{kind}.dcm")
        for i, kind in enumerate(("SEG", "SR"), 1)
    ]
    assert complete_job(
        db.session, claimed, at(40), JobState.DONE, "2 objects", made, [PACS, ARCHIVE], 3600.0, 4.5
    )
    for d in due_deliveries(db.session, at(41)):
        ok, retry = d.destination == PACS, d.sop_instance_uid == "2.25.2"
        later = at(100) if retry and not ok else None
        error = "" if ok else ("connection refused" if retry else "association rejected")
        finish_delivery_attempt(
            db.session,
            d,
            at(41 + d.pk),
            delivered=ok,
            status=0 if ok else None,
            error=error,
            next_attempt_at=later,
        )
    failing = claim_job(db.session, at(50), 60.0, ["m"])
    assert failing is not None and failing.study_instance_uid == STUDY_B
    assert fail_job(db.session, failing, at(55), "boom: out of memory")
    _route(db, STUDY_B, "q", {"routing": [], "series": [B1], "selection": []})
    with db.session.begin() as session:
        record_event(session, at(60), STUDY_A, "action", f"rerun by alice: job {claimed.pk}")
        session.add(Pause(kind="model", name="q", paused_at=at(61), username="alice"))
        session.add(Pause(kind="destination", name=IDLE, paused_at=at(62), username="bob"))
        for i, outcome in enumerate(("completed", "rejected", "completed")):
            session.add(
                Association(
                    started_at=at(i),
                    ended_at=at(i + 1),
                    calling_ae_title=f"AE{i}",
                    called_ae_title="NODE",
                    address=f"10.0.0.{i}",
                    instances=3 * i,
                    outcome=outcome,
                    reason="" if outcome == "completed" else "unknown caller",
                )
            )
        queued = session.scalars(select(Job.pk).where(Job.model_name == "q")).one()
    yield Seeded(db, claimed.pk, failing.pk, queued)
    db.dispose()


def test_status_counts_queues_outbox_and_totals(seeded: Seeded) -> None:
    status = overview.status_summary(seeded.db.session, at(90))
    assert status.models == (overview.ModelQueue("q", 1, 0, 60.0, True),)
    assert status.outbox == (
        overview.OutboxQueue(ARCHIVE, pending=1, due=0, failed=1, paused=False),
        overview.OutboxQueue(IDLE, 0, 0, 0, paused=True),
    )
    assert status.last_received_at == at(5)
    assert (status.studies, status.series_receiving) == (2, 0)
    assert status.jobs_by_state["done"] == 1 and status.jobs_by_state["failed"] == 1
    assert status.jobs_by_state["queued"] == 1 and set(JobState) <= set(status.jobs_by_state)


def test_studies_newest_first_filtered_and_paged(seeded: Seeded) -> None:
    sessions = seeded.db.session
    first = views.list_studies(sessions, limit=1)
    assert [s.study_instance_uid for s in first.items] == [STUDY_B]
    assert first.next_cursor is not None
    second = views.list_studies(sessions, limit=1, cursor=first.next_cursor)
    assert [s.study_instance_uid for s in second.items] == [STUDY_A] and second.next_cursor is None
    a = second.items[0]
    assert (a.series_count, a.instance_count, a.modalities) == (2, 4, ("CT",))
    assert a.calling_ae_titles == ("CT_A", "CT_A2") and a.last_received_at == at(4)
    assert [(j.model_name, j.state) for j in a.jobs] == [("m", JobState.DONE)]
    assert a.patient is None

    def uids(**filters: object) -> list[str]:
        page = views.list_studies(sessions, **filters)  # type: ignore[arg-type]
        return [s.study_instance_uid for s in page.items]

    assert uids(date_from="20260102") == [STUDY_B]
    assert uids(date_to="20260101") == [STUDY_A]
    assert uids(model="m") == [STUDY_B, STUDY_A]
    assert uids(model="m", state="failed") == [STUDY_B]
    assert uids(state=JobState.QUEUED) == [STUDY_B]
    assert uids(calling_ae="CT_A2") == [STUDY_A]
    assert uids(accession="ACC-B") == [STUDY_B]
    assert uids(accession="none") == []
    with pytest.raises(ValueError, match="YYYYMMDD"):
        views.list_studies(sessions, date_from="2026-01-01")
    with pytest.raises(ValueError, match="allowed"):
        views.list_studies(sessions, state="lost")
    jobs_cursor = views.list_jobs(sessions, limit=1).next_cursor
    assert jobs_cursor is not None
    for cursor in ("", "garbage!", jobs_cursor, rows.encode_cursor("study", 1) + "x"):
        with pytest.raises(views.BadCursor):
            views.list_studies(sessions, cursor=cursor)


def test_patient_details_only_when_asked(seeded: Seeded) -> None:
    page = views.list_studies(seeded.db.session, with_patient=True)
    assert {s.patient for s in page.items} == {
        views.PatientDetails(CANARY_PATIENT_NAME, CANARY_PATIENT_ID, "", CANARY_BIRTH_DATE)
    }
    found = views.study_timeline(seeded.db.session, STUDY_A, with_patient=True)
    assert found is not None and found.study.patient is not None
    assert found.study.patient.patient_birth_date == CANARY_BIRTH_DATE


def test_nothing_read_without_with_patient_holds_patient_data(seeded: Seeded) -> None:
    """Every reader a viewer's screens use: no canary name, ID or birth date anywhere."""
    s, now = seeded.db.session, at(90)
    answers: list[object] = [
        overview.status_summary(s, now),
        views.list_studies(s),
        views.list_studies(s, accession="ACC-A", model="m", calling_ae="CT_A"),
        views.study_timeline(s, STUDY_A),
        views.study_timeline(s, STUDY_B, with_patient=False),
        views.list_jobs(s),
        views.job_detail(s, seeded.job_a),
        views.job_detail(s, seeded.job_b),
        overview.failures_by_cause(s),
        peers.destinations(s, now, [IDLE]),
        peers.destination_detail(s, ARCHIVE, now),
        peers.recent_associations(s),
        views.result_files(s, 1),
    ]
    for answer in answers:
        assert answer is not None
        assert phi_canaries_in(repr(answer)) == [], answer
    shown = repr(views.list_studies(s, with_patient=True))
    assert phi_canaries_in(shown) == [CANARY_PATIENT_NAME, CANARY_PATIENT_ID, CANARY_BIRTH_DATE]


def test_timeline_from_received_to_delivered(seeded: Seeded) -> None:
    found = views.study_timeline(seeded.db.session, STUDY_A)
    assert found is not None
    assert found.received == timeline.Received(4, ("CT_A", "CT_A2"), at(1), at(4))
    first, second = found.series
    assert (first.series_instance_uid, first.state, first.instance_count) == (
        A1,
        SeriesState.ROUTED,
        3,
    )
    assert first.completed_at == at(20) and first.reason == "routed to m; quiet"
    assert (second.state, second.reason) == (SeriesState.NOT_ROUTED, "a better series")
    (job,) = found.jobs
    assert job.job.pk == seeded.job_a and job.job.state is JobState.DONE
    assert (job.job.duration_s, job.job.model_version, job.job.attempts) == (4.5, "1.0", 1)
    assert (job.job.created_at, job.job.updated_at) == (at(30), at(40))
    assert job.routing.rules == ("chest ct",)
    assert job.routing.series == (A1,)
    assert job.routing.candidates == (
        timeline.Candidate(A1, True, "ORIGINAL, axial, 1 mm slices, 3 slices"),
        timeline.Candidate(A2, False, "thinner slices (1 mm vs 5 mm)"),
    )
    assert job.routing.lines == tuple(RULES) and job.routing.selection == tuple(CHOSEN)
    assert [(r.kind, r.sop_instance_uid) for r in job.results] == [
        ("SEG", "2.25.1"),
        ("SR", "2.25.2"),
    ]
    seg, sr = job.results
    assert [(d.destination, d.state, d.attempts) for d in seg.deliveries] == [
        (ARCHIVE, DeliveryState.FAILED, 1),
        (PACS, DeliveryState.DELIVERED, 1),
    ]
    archive_sr = sr.deliveries[0]
    assert (archive_sr.state, archive_sr.last_error) == (
        DeliveryState.PENDING,
        "connection refused",
    )
    assert archive_sr.next_attempt_at == at(100) and archive_sr.last_attempt_at is not None
    assert seg.deliveries[1].delivered_at is not None and seg.deliveries[1].last_status == 0
    kinds = [e.kind for e in found.events]
    assert kinds[:3] == ["not-routed", "routed", "job-done"] and kinds[-1] == "action"
    assert [e.at for e in found.events] == sorted(e.at for e in found.events)
    assert found.events_left_out == 0
    assert [e.kind for e in job.events] == ["routed", "job-done", "action"]
    assert views.study_timeline(seeded.db.session, "9.9.9") is None


def test_timeline_keeps_the_newest_history_lines(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeline, "MAX_EVENTS", 2)
    found = views.study_timeline(seeded.db.session, STUDY_A)
    assert found is not None and len(found.events) == 2 and found.events_left_out > 0
    assert found.events[-1].kind == "action"


def test_jobs_newest_first_filtered_and_paged(seeded: Seeded) -> None:
    sessions = seeded.db.session
    every: list[views.JobSummary] = []
    cursor = None
    for _ in range(5):
        page = views.list_jobs(sessions, limit=1, cursor=cursor)
        every += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [j.pk for j in every] == [seeded.job_q, seeded.job_b, seeded.job_a]
    done = every[-1]
    assert (done.results, done.deliveries) == (
        2,
        views.DeliveryCounts(pending=1, delivered=2, failed=1),
    )
    assert (done.calling_ae_title, done.accession_number, done.study_date) == (
        "CT_A",
        "ACC-A",
        "20260101",
    )
    assert (done.series_instance_uid, done.modality, done.subject) == (A1, "CT", f"study/{STUDY_A}")

    def pks(**filters: object) -> list[int]:
        return [j.pk for j in views.list_jobs(sessions, **filters).items]  # type: ignore[arg-type]

    assert pks(state="failed") == [seeded.job_b]
    assert pks(model="q") == [seeded.job_q]
    assert pks(calling_ae="CT_B") == [seeded.job_q, seeded.job_b]
    assert pks(accession="ACC-A") == [seeded.job_a]
    assert pks(date_from="20260102", state="queued") == [seeded.job_q]
    assert pks(model="none") == []
    detail = views.job_detail(sessions, seeded.job_b)
    assert detail is not None and detail.job.reason == "boom: out of memory"
    assert detail.routing == timeline.Routing((), (), (), (), ())  # stored before explanations
    assert views.job_detail(sessions, 999) is None


def test_failures_grouped_by_cause_until_rerun(seeded: Seeded) -> None:
    groups = overview.failures_by_cause(seeded.db.session)
    assert [(g.kind, g.cause, g.count, g.names) for g in groups] == [
        ("deliveries", "association rejected", 1, (ARCHIVE,)),
        ("jobs", "boom: out of memory", 1, ("m",)),
    ]
    assert groups[1].example_ids == (seeded.job_b,) and groups[1].latest_at == at(55)
    with seeded.db.session.begin() as session:  # an operator's re-run: a later revision
        failed = session.get(Job, seeded.job_b)
        assert failed is not None
        session.add(
            Job(
                job_key="m/1.0/rerun",
                study_fk=failed.study_fk,
                series_fk=failed.series_fk,
                model_name="m",
                model_version="1.0",
                created_at=at(70),
                updated_at=at(70),
                subject=failed.subject,
                revision=1,
                predecessor_fk=failed.pk,
            )
        )
    assert [g.kind for g in overview.failures_by_cause(seeded.db.session)] == ["deliveries"]
    revised = views.job_detail(seeded.db.session, seeded.job_b)
    assert revised is not None and len(revised.successor_pks) == 1


def test_destinations_and_their_outbox(seeded: Seeded) -> None:
    sessions, now = seeded.db.session, at(90)
    found = {d.destination: d for d in peers.destinations(sessions, now, [PACS, "NEW@h:104"])}
    assert sorted(found) == [ARCHIVE, IDLE, "NEW@h:104", PACS]
    archive = found[ARCHIVE]
    assert (archive.pending, archive.due, archive.delivered, archive.failed) == (1, 0, 0, 1)
    assert archive.last_error in ("association rejected", "connection refused")
    assert found[PACS].delivered == 2 and found[PACS].last_status == 0
    assert found[IDLE].paused and found[IDLE].paused_by == "bob" and found[IDLE].paused_at == at(62)
    assert not found["NEW@h:104"].paused and found["NEW@h:104"].last_attempt_at is None
    assert overview.destinations(sessions, at(200))[0].due == 1  # the same function
    detail = peers.destination_detail(sessions, ARCHIVE, now)
    assert detail is not None
    assert [d.sop_instance_uid for d in detail.outbox] == ["2.25.2"]
    assert [d.pk for d in detail.recent] == sorted((d.pk for d in detail.recent), reverse=True)
    assert {(d.job_pk, d.model_name, d.study_instance_uid) for d in detail.recent} == {
        (seeded.job_a, "m", STUDY_A)
    }
    assert peers.destination_detail(sessions, "NONE@h:1", now) is None
    empty = peers.destination_detail(sessions, "NEW@h:104", now, configured=["NEW@h:104"])
    assert empty is not None and empty.outbox == () and empty.recent == ()


def test_recent_associations(seeded: Seeded) -> None:
    rows = peers.recent_associations(seeded.db.session, 2)
    assert [r.calling_ae_title for r in rows] == ["AE2", "AE1"]
    assert rows[1].outcome == "rejected" and rows[1].reason == "unknown caller"
    refused = peers.recent_associations(seeded.db.session, outcome="rejected", calling_ae="AE1")
    assert [(r.address, r.instances) for r in refused] == [("10.0.0.1", 3)]


def test_result_files(seeded: Seeded) -> None:
    found = views.result_files(seeded.db.session, 2)
    assert found is not None
    assert (found.kind, found.path, found.job_pk) == ("SR", "out/SR.dcm", seeded.job_a)
    assert (found.seg_path, found.sr_path) == ("out/SEG.dcm", "out/SR.dcm")
    assert found.series_instance_uid == A1 and found.study_instance_uid == STUDY_A
    assert found.source_paths == tuple(f"in/{A1}/{n}.dcm" for n in (3, 2, 1))  # by number
    assert views.result_files(seeded.db.session, 99) is None


def test_a_page_never_holds_more_than_the_maximum(seeded: Seeded) -> None:
    assert rows.page_size(10**9) == views.MAX_PAGE and rows.page_size(0) == 1
    assert dataclasses.is_dataclass(views.list_jobs(seeded.db.session, limit=10**9))


@pytest.mark.parametrize("few_series", [0, 1, 2000])
def test_a_sender_of_many_series_or_few_filters_the_same(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, few_series: int
) -> None:
    """The lists read a big sender's rows newest first, a small one's through its index."""
    monkeypatch.setattr(views, "FEW_SERIES", few_series)
    sessions = seeded.db.session
    for ae, studies, jobs in (
        ("CT_A", [STUDY_A], [seeded.job_a]),
        ("CT_A2", [STUDY_A], []),  # its series was not chosen
        ("CT_B", [STUDY_B], [seeded.job_q, seeded.job_b]),
        ("NOBODY", [], []),
    ):
        found = views.list_studies(sessions, calling_ae=ae)
        assert [s.study_instance_uid for s in found.items] == studies
        assert [j.pk for j in views.list_jobs(sessions, calling_ae=ae).items] == jobs
    page = views.list_jobs(sessions, calling_ae="CT_B", limit=1)
    assert page.next_cursor is not None
    rest = views.list_jobs(sessions, calling_ae="CT_B", cursor=page.next_cursor)
    assert [j.pk for j in rest.items] == [seeded.job_b] and rest.next_cursor is None
