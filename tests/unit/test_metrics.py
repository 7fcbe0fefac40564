"""Metrics: Prometheus names and units, bounded label sets, the triggers read from the
reasons the node records, what the assembler counts and times (SQLite file, time passed
in), what the association watch reports, the outbox rows' times for the send stage, and a
scrape after one study's worth of stage calls: at least 25 series, no UID in any label."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dicom_ai_node.assemble.policy import completion_reason, study_completion_reason
from dicom_ai_node.assemble.sweep import Assembler
from dicom_ai_node.domain import AssociationOutcome, AssociationSummary, JobState
from dicom_ai_node.metrics import (
    DELIVERY_OUTCOMES,
    INSTANCE_OUTCOMES,
    JOB_OUTCOMES,
    SERIES_TRIGGERS,
    STAGES,
    STUDY_TRIGGERS,
    NodeMetrics,
    series_trigger,
    study_trigger,
)
from dicom_ai_node.receive.watch import AssociationWatch
from dicom_ai_node.route.load import load_rules
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job
from dicom_ai_node.store.outbox import due_deliveries

from .test_assemble_sweep import SPECS, VERSIONS, at, send

STUDY = "1.2.826.0.1.3680043.8.498.1"
CT_SERIES = "1.2.826.0.1.3680043.8.498.2"
DX_SERIES = "1.2.826.0.1.3680043.8.498.3"
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
DESTINATION = "PACS@10.0.0.5:104"
#: A UID (PS3.5 9.1) of five or more components; an IPv4 address has four.
UID = re.compile(r"\b\d+(\.\d+){4,}\b")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    yield database
    database.dispose()


def value(metrics: NodeMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def one_study(db: Database, metrics: NodeMetrics) -> None:
    """A CT series (quiet) and a radiograph (its announced count), assembled and routed."""
    sweep = Assembler(db, load_rules(RULES, VERSIONS), SPECS, VERSIONS, 10.0, 0.0, metrics=metrics)
    send(db, CT_SERIES, 3, 0.0, study=STUDY)
    send(db, DX_SERIES, 2, 1.0, expected=2, study=STUDY, Modality="DX")
    sweep.sweep(at(5.0))  # the radiograph is complete at its count: its job now
    sweep.sweep(at(20.0))  # the CT is quiet, and the study with it


def test_names_follow_prometheus_conventions() -> None:
    metrics = NodeMetrics()
    metrics.stage("infer", "lungs", 1.0)
    metrics.result_delivered("lungs", 10.0, 1.0)
    metrics.delivery_attempt(DESTINATION, 0.5)
    families = list(metrics.registry.collect())
    ours = [f for f in families if f.name.startswith("dicom_ai_node_")]
    assert len(ours) == 20 and all(f.documentation for f in ours)
    others = {f.name.split("_")[0] for f in families if f not in ours}
    assert others == {"process", "python"}  # prometheus_client's own collectors
    for family in ours:
        assert re.fullmatch(r"dicom_ai_node_[a-z][a-z0-9_]*[a-z]", family.name), family.name
        assert not re.search(r"milli|_ms$|_kb|_mb|_percent|_total$", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name


def test_labels_outside_their_sets_are_refused() -> None:
    metrics = NodeMetrics(process=False)
    with pytest.raises(ValueError, match="allowed: stored, duplicate, refused"):
        metrics.instance_received("lost")
    with pytest.raises(ValueError, match="allowed: done, quality_failed, failed, not_recorded"):
        metrics.job_finished("lungs", "cancelled")
    with pytest.raises(ValueError, match="allowed: delivered, retry, failed"):
        metrics.delivery(DESTINATION, "pending")
    with pytest.raises(ValueError, match="allowed: wait_complete"):
        metrics.stage("decode", "lungs", 1.0)
    with pytest.raises(ValueError):
        metrics.association_ended("dropped")
    text = metrics.exposition().decode()
    for outcome in INSTANCE_OUTCOMES:
        assert f'dicom_ai_node_instances_received_total{{outcome="{outcome}"}} 0.0' in text


def test_the_triggers_come_from_the_reasons_the_node_records() -> None:
    quiet = completion_reason(
        now=at(10),
        last_received_at=at(0),
        quiet_period_s=10,
        instance_count=3,
        expected_count=None,
    )
    counted = completion_reason(
        now=at(1), last_received_at=at(0), quiet_period_s=10, instance_count=3, expected_count=3
    )
    assert quiet is not None and counted is not None
    assert series_trigger(quiet) == "quiet" and series_trigger(counted) == "expected_count"
    assert series_trigger("expected instance count 3 reached") == "expected_count"  # the index
    assert series_trigger("forced by alice") == "forced"
    assert series_trigger("") == "other"
    common = {"now": at(1), "last_received_at": at(0), "quiet_period_s": 10.0}
    reasons = [
        study_completion_reason(**common, series_count=2, instance_count=5, expected_series=2),
        study_completion_reason(**common, series_count=2, instance_count=5, expected_instances=5),
        study_completion_reason(**{**common, "now": at(10)}, series_count=2, instance_count=5),
    ]
    assert [study_trigger(r or "") for r in reasons] == [
        "expected_series",
        "expected_instances",
        "quiet",
    ]
    assert study_trigger("forced by alice") == "forced" and study_trigger("?") == "other"
    assert set(map(series_trigger, ["", "quiet", "forced"])) <= set(SERIES_TRIGGERS)
    assert set(map(study_trigger, ["", "forced"])) <= set(STUDY_TRIGGERS)


def test_the_assembler_counts_each_completion_once_and_times_each_jobs_wait(
    db: Database,
) -> None:
    metrics = NodeMetrics(process=False)
    one_study(db, metrics)
    series = "dicom_ai_node_series_completed_total"
    assert value(metrics, series, trigger="expected_count") == 1
    assert value(metrics, series, trigger="quiet") == 1
    assert value(metrics, "dicom_ai_node_studies_completed_total", trigger="quiet") == 1
    waits = "dicom_ai_node_stage_duration_seconds"
    # the radiograph's job at 5 s (its last instance at 1 s), the CT's at 20 s (at 0 s)
    assert value(metrics, f"{waits}_count", stage="wait_complete", model="views") == 1
    assert value(metrics, f"{waits}_sum", stage="wait_complete", model="views") == 4.0
    assert value(metrics, f"{waits}_count", stage="wait_complete", model="lungs") == 1
    assert value(metrics, f"{waits}_sum", stage="wait_complete", model="lungs") == 20.0
    Assembler(db, load_rules(RULES, VERSIONS), SPECS, VERSIONS, 10.0, 0.0, metrics=metrics).sweep(
        at(100.0)
    )  # nothing new: nothing counted again
    assert value(metrics, series, trigger="quiet") == 1
    assert value(metrics, f"{waits}_count", stage="wait_complete", model="lungs") == 1


def test_the_outbox_gives_each_due_result_its_model_and_times(db: Database) -> None:
    one_study(db, NodeMetrics(process=False))
    claimed = claim_job(db.session, at(21.0), 60.0, ["lungs"])
    assert claimed is not None
    result = NewResult(
        "SR",
        "1.2.826.0.1.3680043.8.498.9",
        "1.2.840.10008.5.1.4.1.1.88.34",
        "1.2.826.0.1.3680043.8.498.8",
        "results/x.dcm",
    )
    done = complete_job(
        db.session, claimed, at(25.0), JobState.DONE, "ok", [result], [DESTINATION], 60.0, 4.0
    )
    assert done
    [due] = due_deliveries(db.session, at(26.0))
    assert (due.model_name, due.result_created_at, due.last_received_at) == (
        "lungs",
        at(25.0),
        at(0.0),
    )


class _Assoc:
    """pynetdicom's flags of an ended association."""

    def __init__(self, *, released: bool = False, aborted: bool = False) -> None:
        self.is_rejected, self.is_released, self.is_aborted = False, released, aborted


def _request(called: bytes, calling: bytes) -> bytes:
    """The first 42 bytes of an A-ASSOCIATE-RQ (PS3.8 9.3.2) with these titles."""
    return b"\x01\x00\x00\x00\x01\x00\x00\x01\x00\x00" + called.ljust(16) + calling.ljust(16)


def test_the_watch_reports_each_ending_once_with_printable_titles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = NodeMetrics(process=False)
    ended: list[AssociationSummary] = []
    watch = AssociationWatch(metrics, ended.append, lambda: at(9.0))
    watch.refused(
        "10.0.0.9",
        _request(b"AI_NODE", b"EVIL\x1b[2J"),
        AssociationOutcome.REJECTED,
        "calling AE title not recognised",
        at(8.0),
    )
    done, lost = _Assoc(released=True), _Assoc()
    watch.begin(done, "10.0.0.5", _request(b"AI_NODE", b"PACS"), at(1.0))
    watch.begin(lost, "10.0.0.6", _request(b"AI_NODE", b"CT01"), at(2.0))
    for _ in range(3):
        watch.stored(done)
    watch.stored(lost)
    watch.end(done)
    watch.end(done)  # told twice (it never is): reported once
    watch.end(lost)
    assert ended == [
        AssociationSummary(
            "EVIL?[2J",
            "AI_NODE",
            "10.0.0.9",
            0,
            AssociationOutcome.REJECTED,
            "calling AE title not recognised",
            at(8.0),
            at(9.0),
        ),
        AssociationSummary(
            "PACS", "AI_NODE", "10.0.0.5", 3, AssociationOutcome.COMPLETED, "", at(1.0), at(9.0)
        ),
        AssociationSummary(
            "CT01",
            "AI_NODE",
            "10.0.0.6",
            1,
            AssociationOutcome.ABORTED,
            "connection closed without a release",
            at(2.0),
            at(9.0),
        ),
    ]

    def broken(summary: AssociationSummary) -> None:
        raise RuntimeError("index locked")

    AssociationWatch(metrics, broken, lambda: at(9.0)).refused(
        "10.0.0.7", b"", AssociationOutcome.REFUSED, "no association request within 10 s", at(9.0)
    )
    assert "cannot record the association from 10.0.0.7" in caplog.text
    for outcome, count in (("completed", 1), ("aborted", 1), ("rejected", 1), ("refused", 1)):
        assert value(metrics, "dicom_ai_node_associations_total", outcome=outcome) == count


def test_a_scrape_after_one_study_has_25_series_and_no_uid_in_any_label(db: Database) -> None:
    metrics = NodeMetrics()
    metrics.add_models(VERSIONS)
    metrics.add_destinations([DESTINATION])
    metrics.watch_storage(lambda: 5e9, 10 * 2**20)
    metrics.watch_models(len(VERSIONS), lambda: 2)
    metrics.watch_associations(lambda: 0)
    # receive: five instances on one association
    for _ in range(5):
        metrics.bytes_received(524_288)
        metrics.instance_received("stored")
        metrics.cstore_handled(0.004)
    metrics.association_ended(AssociationOutcome.COMPLETED)
    one_study(db, metrics)  # assemble
    for model in VERSIONS:  # the job step, the registry, send
        metrics.model_loaded(model)
        for stage in ("queue_wait", "load", "infer", "encode"):
            metrics.stage(stage, model, 0.5)
        metrics.job_finished(model, "done")
        metrics.delivery_attempt(DESTINATION, 0.2)
        for _ in range(2):
            metrics.delivery(DESTINATION, "delivered")
            metrics.result_delivered(model, 12.0, 1.0)
    text = metrics.exposition().decode()
    samples = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("dicom_ai_node_") and not s.name.endswith("_created")
    ]
    assert len(samples) >= 25
    labels = {v for s in samples for v in s.labels.values()}
    assert not [v for v in labels if UID.search(v)]
    assert not [u for u in (STUDY, CT_SERIES, DX_SERIES) if u in text]
    allowed = (
        set(INSTANCE_OUTCOMES)
        | set(JOB_OUTCOMES)
        | set(DELIVERY_OUTCOMES)
        | set(STAGES)
        | set(SERIES_TRIGGERS)
        | set(STUDY_TRIGGERS)
        | {o.value for o in AssociationOutcome}
        | set(VERSIONS)
        | {DESTINATION}
    )
    bounds = {v for s in samples for k, v in s.labels.items() if k == "le"}
    versions = {v for s in samples for k, v in s.labels.items() if k == "version"}
    assert labels - bounds - versions <= allowed


#: The gauges the web stage reads from the index at scrape time (web/metrics.py).
INDEX_GAUGES = {
    "dicom_ai_node_queue_depth",
    "dicom_ai_node_jobs_running",
    "dicom_ai_node_queue_oldest_age_seconds",
    "dicom_ai_node_deliveries_pending",
    "dicom_ai_node_deliveries_failed",
    "dicom_ai_node_series_receiving",
}
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exported_names() -> set[str]:
    """Every sample name a node's scrape can hold (histogram and counter suffixes too)."""
    metrics = NodeMetrics()
    metrics.add_models(["lungs"])
    metrics.add_destinations([DESTINATION])
    metrics.stage("infer", "lungs", 1.0)
    metrics.result_delivered("lungs", 10.0, 1.0)
    metrics.delivery_attempt(DESTINATION, 0.5)
    names = {s.name for f in metrics.registry.collect() for s in f.samples}
    return names | INDEX_GAUGES | {"up"}


def test_the_dashboard_and_the_alerts_name_only_metrics_the_node_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dicom-ai-node.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    named = {m for e in exprs for m in re.findall(r"\b(?:dicom_ai_node|process)_[a-z_]+", e)}
    assert named and named <= exported_names(), named - exported_names()
    assert len(panels) >= 20 and all(p["title"] and p["description"] for p in panels)
    assert any("histogram_quantile" in e for e in exprs)
    assert len(alerts) >= 9
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
