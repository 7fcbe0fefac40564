"""Metrics over real sockets: a chest CT sent to a running node moves each counter and
histogram by what happened to it, and the scrape passes ``promtool check metrics``; the
alert rules pass ``promtool check rules`` and their own unit tests; the listener reports
each association (completed, rejected, refused, aborted) to the metrics and its callback.

A missing promtool skips these tests, and fails them when ``CI=true``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.domain import AssociationOutcome, AssociationSummary, DeliveryState, JobState
from dicom_ai_node.metrics import NodeMetrics
from dicom_ai_node.receive.part10 import file_head
from dicom_ai_node.receive.scp import ScpConfig, StorageSCP
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.store.ingest import Ingest
from dicom_ai_node.store.tables import Delivery, Instance, Job, Result, Series
from dicom_ai_node.testing.series import make_ct_series, phi_canaries_in

from ..conftest import free_port, write_node_config
from ..tools import require_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
#: A UID (PS3.5 9.1) of five or more components; an IPv4 address has four.
UID = re.compile(r"\b\d+(\.\d+){4,}\b")
QUIET_S = 0.5


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = require_tool("promtool")
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def value(metrics: NodeMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def series_count(text: str) -> int:
    """The node's own series in a scrape (``_created`` timestamps left out)."""
    return sum(
        1
        for family in text_string_to_metric_families(text)
        if family.name.startswith("dicom_ai_node_")
        for sample in family.samples
        if not sample.name.endswith("_created")
    )


def label_values(text: str) -> list[str]:
    return [
        v
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for v in sample.labels.values()
    ]


def rows(node: Node, table: type) -> list:  # type: ignore[type-arg]
    with node.db.session() as session:
        return list(session.scalars(select(table)))


def test_a_study_moves_each_counter_by_what_happened_and_the_scrape_passes_promtool(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    require_tool("promtool")
    pacs_port, _pacs_dir = storescp
    port = free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", pacs_port)], QUIET_S
    )
    node = Node(load_settings(config))
    destination = f"PACS@127.0.0.1:{pacs_port}"
    try:
        node.start()
        _, datasets = make_ct_series(24, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=33)
        sent_at = time.time()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="PACS"))
        wait_until(
            lambda: (
                bool(rows(node, Delivery))
                and all(d.state == DeliveryState.DELIVERED.value for d in rows(node, Delivery))
            ),
            120,
            "every result delivered",
        )
        wait_until(lambda: value(node.metrics, "dicom_ai_node_active_associations") == 0, 10, "")
        m = node.metrics
        [job] = rows(node, Job)
        model, delivered = job.model_name, len(rows(node, Delivery))
        assert job.state == JobState.DONE.value and delivered == len(rows(node, Result)) >= 2

        # receive: every instance stored once, its bytes as received, one association
        instances = rows(node, Instance)
        assert value(m, "dicom_ai_node_instances_received_total", outcome="stored") == len(datasets)
        for outcome in ("duplicate", "refused"):
            assert value(m, "dicom_ai_node_instances_received_total", outcome=outcome) == 0
        heads = sum(
            len(file_head(i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax_uid))
            for i in instances
        )
        data_set_bytes = sum(i.size for i in instances) - heads
        assert value(m, "dicom_ai_node_received_bytes_total") == data_set_bytes
        assert value(m, "dicom_ai_node_cstore_duration_seconds_count") == len(datasets)
        assert value(m, "dicom_ai_node_associations_total", outcome="completed") == 1
        for outcome in ("aborted", "rejected", "refused"):
            assert value(m, "dicom_ai_node_associations_total", outcome=outcome) == 0
        last = value(m, "dicom_ai_node_last_instance_received_timestamp_seconds")
        assert sent_at <= last <= time.time()

        # assemble: one series and one study completed, one wait for completeness
        [series] = rows(node, Series)
        completed = sum(
            value(m, "dicom_ai_node_series_completed_total", trigger=t)
            for t in ("quiet", "expected_count", "forced", "other")
        )
        assert completed == 1
        assert value(m, "dicom_ai_node_studies_completed_total", trigger="quiet") == 1
        stage = "dicom_ai_node_stage_duration_seconds"
        assert value(m, f"{stage}_count", stage="wait_complete", model=model) == 1
        assert value(m, f"{stage}_sum", stage="wait_complete", model=model) >= QUIET_S

        # the job: done once, each of its stages timed once
        assert value(m, "dicom_ai_node_jobs_total", model=model, outcome="done") == 1
        for other in ("quality_failed", "failed", "not_recorded"):
            assert value(m, "dicom_ai_node_jobs_total", model=model, outcome=other) == 0
        for name in ("queue_wait", "load", "infer", "encode"):
            assert value(m, f"{stage}_count", stage=name, model=model) == 1, name

        # send: each result delivered once, timed from its series' last image
        deliveries = "dicom_ai_node_deliveries_total"
        assert value(m, deliveries, destination=destination, outcome="delivered") == delivered
        assert value(m, deliveries, destination=destination, outcome="failed") == 0
        assert value(m, f"{stage}_count", stage="deliver", model=model) == delivered
        end_to_end = "dicom_ai_node_last_image_to_delivered_seconds"
        assert value(m, f"{end_to_end}_count", model=model) == delivered
        assert value(m, f"{end_to_end}_sum", model=model) >= delivered * QUIET_S
        assert (
            value(
                m, "dicom_ai_node_delivery_attempt_duration_seconds_count", destination=destination
            )
            >= 1
        )

        # live gauges
        installed = value(m, "dicom_ai_node_models_installed")
        assert (
            installed == len(node.registry) and value(m, "dicom_ai_node_models_loaded") == installed
        )
        assert value(m, "dicom_ai_node_model_loads_total", model=model) == 1
        assert value(m, "dicom_ai_node_storage_reserve_bytes") == 10 * 1024 * 1024
        assert value(m, "dicom_ai_node_storage_free_bytes") > 0
        assert value(m, "dicom_ai_node_build_info", version=_version()) == 1

        # the scrape: promtool's lint passes, enough series, no UID or patient value
        text = m.exposition().decode()
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert series_count(text) >= 25
        uids = {series.series_instance_uid, *(i.sop_instance_uid for i in instances)}
        uids.add(str(datasets[0].StudyInstanceUID))
        assert not [u for u in uids if u in text]
        assert not [v for v in label_values(text) if UID.search(v)]
        assert not phi_canaries_in(text)
    finally:
        node.stop()


def _version() -> str:
    from dicom_ai_node import __version__

    return __version__


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    config = promtool("check", "config", str(ALERTS.parent / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


#: Values for the dashboard's variables, so that its queries are plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$instance": ".*",
    "$model": ".*",
    "$destination": ".*",
}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dicom-ai-node.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 25
    rules = []
    for n, expr in enumerate(exprs):
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _store(ae_title: str, port: int, datasets: list[Dataset], *, abort: bool = False) -> None:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(str(datasets[0].SOPClassUID))
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    if abort:
        assoc.abort()
    else:
        assoc.release()


def test_the_listener_reports_each_association_as_it_ends(tmp_path: Path) -> None:
    ended: list[AssociationSummary] = []
    metrics = NodeMetrics(process=False)
    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    db.migrate()
    config = ScpConfig(
        ae_title="AI_NODE", host="127.0.0.1", port=free_port(), on_association_end=ended.append
    )
    files = FileStore(tmp_path / "storage", fsync=False)
    scp = StorageSCP(config, Ingest(files, db.session, utcnow), metrics=metrics)
    scp.start()
    try:
        _, datasets = make_ct_series(4, 16, 16, spacing_mm=(5.0, 1.0, 1.0), seed=34)
        _store("AI_NODE", scp.port, datasets[:3])  # completed, 3 instances
        _store("SOMEONE_ELSE", scp.port, datasets)  # rejected: called AE title
        with socket.create_connection(
            ("127.0.0.1", scp.port)
        ) as sock:  # refused: no A-ASSOCIATE-RQ
            sock.sendall(b"\x04\x00\x00\x00\x00\x02\x00\x00")
            sock.settimeout(5)
            sock.recv(64)
        _store("AI_NODE", scp.port, datasets[3:], abort=True)  # aborted after 1
        wait_until(lambda: len(ended) == 4, 15, "four associations reported")
        wait_until(lambda: value(metrics, "dicom_ai_node_active_associations") == 0, 10, "")
    finally:
        scp.stop()
        db.dispose()
    by_outcome = {s.outcome: s for s in ended}
    assert set(by_outcome) == set(AssociationOutcome)
    done = by_outcome[AssociationOutcome.COMPLETED]
    assert (done.calling_ae_title, done.called_ae_title, done.address, done.instances) == (
        "PACS",
        "AI_NODE",
        "127.0.0.1",
        3,
    )
    assert done.reason == "" and done.started_at <= done.ended_at
    rejected = by_outcome[AssociationOutcome.REJECTED]
    assert (rejected.called_ae_title, rejected.instances) == ("SOMEONE_ELSE", 0)
    assert "called AE title" in rejected.reason
    refused = by_outcome[AssociationOutcome.REFUSED]
    assert (refused.calling_ae_title, refused.instances) == ("", 0)
    assert "not an A-ASSOCIATE-RQ" in refused.reason
    assert by_outcome[AssociationOutcome.ABORTED].instances == 1
    for outcome in AssociationOutcome:
        assert value(metrics, "dicom_ai_node_associations_total", outcome=outcome.value) == 1
    assert value(metrics, "dicom_ai_node_instances_received_total", outcome="stored") == 4
