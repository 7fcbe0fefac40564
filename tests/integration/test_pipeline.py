"""The pipeline in-process over real sockets: quality failures are reported, the outbox holds
results for a dead destination without delaying a live one, and delivers when it comes back;
a running job's heartbeat keeps its lease."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.domain import DeliveryState, JobState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.db import utcnow
from dicom_ai_node.store.index import index_instance
from dicom_ai_node.store.jobs import ClaimedJob, NewResult, claim_job
from dicom_ai_node.store.tables import Delivery, Job, Series
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import (
    dcmtk_env,
    free_port,
    require_exe,
    stop_process,
    wait_for_port,
    write_node_config,
)
from ..unit.test_store_index import rec

pytestmark = pytest.mark.integration


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


def readable(folder: Path) -> list[Dataset]:
    """The objects storescp has finished writing (a file being written does not parse)."""
    out = []
    for path in folder.iterdir():
        with contextlib.suppress(InvalidDicomError, EOFError, OSError):
            out.append(dcmread(path))
    return out


def jobs(node: Node) -> list[Job]:
    with node.db.session() as session:
        return list(session.scalars(select(Job)))


def deliveries(node: Node) -> list[Delivery]:
    with node.db.session() as session:
        return list(session.scalars(select(Delivery)))


def start_storescp(port: int, out: Path) -> subprocess.Popen[bytes]:
    out.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [require_exe("storescp"), "-aet", "PACS", "-od", str(out), "+xa", "-uf", str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, 15, proc)
    return proc


def test_missing_slice_fails_the_quality_check_and_says_why(tmp_path: Path, db_url: str) -> None:
    port, pacs_port = free_port(), free_port()
    settings = load_settings(write_node_config(tmp_path, db_url, port, [("PACS", pacs_port)], 0.5))
    pacs = start_storescp(pacs_port, tmp_path / "pacs")
    node: Node | None = None
    try:
        node = Node(settings)
        node.start()
        _, datasets = make_ct_series(30, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=31)
        del datasets[12]
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="PACS"))
        wait_until(
            lambda: any(j.state != "queued" and j.state != "running" for j in jobs(node)),
            60,
            "job end",
        )
        [job] = jobs(node)
        assert job.state == JobState.QUALITY_FAILED.value
        assert "missing slices" in job.reason
        # the reason also reaches the PACS, as a findings SR (no geometry, separate object)
        wait_until(lambda: len(readable(tmp_path / "pacs")) == 1, 30, "findings SR")
        [report] = readable(tmp_path / "pacs")
        assert report.Modality == "SR"
        assert not [p for p in (tmp_path / "pacs").iterdir() if "SEG" in p.name]
    finally:
        if node is not None:
            node.stop()
        stop_process(pacs)


def test_dead_destination_holds_results_and_never_delays_a_live_one(tmp_path: Path) -> None:
    port, live_port, dead_port = free_port(), free_port(), free_port()
    extra = f'destinations = ["LATE@127.0.0.1:{dead_port}"]'
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", live_port)], 0.5, extra
    )
    live = start_storescp(live_port, tmp_path / "live")
    late = None
    node: Node | None = None
    try:
        node = Node(load_settings(config))
        node.start()
        _, datasets = make_ct_series(24, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=32)
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="PACS"))
        wait_until(
            lambda: len(list((tmp_path / "live").iterdir())) >= 2, 90, "results at the live PACS"
        )
        by_dest = {d.destination: d for d in deliveries(node)}
        dead = [d for d in deliveries(node) if d.destination.startswith("LATE@")]
        assert dead and all(d.state == DeliveryState.PENDING.value for d in dead)
        wait_until(
            lambda: all(
                d.attempts >= 2 for d in deliveries(node) if d.destination.startswith("LATE@")
            ),
            30,
            "retries",
        )
        assert all(d.last_error for d in deliveries(node) if d.destination.startswith("LATE@"))
        assert by_dest  # the live destination's rows exist too
        # the destination comes back: held results arrive within the backoff cap (5 s here)
        late = start_storescp(dead_port, tmp_path / "late")
        wait_until(
            lambda: len(list((tmp_path / "late").iterdir())) >= 2, 30, "held results delivered"
        )
        wait_until(
            lambda: all(d.state == DeliveryState.DELIVERED.value for d in deliveries(node)),
            10,
            "all delivered",
        )
    finally:
        if node is not None:
            node.stop()
        stop_process(live)
        if late is not None:
            stop_process(late)


def test_a_running_job_keeps_its_lease_by_heartbeat(tmp_path: Path) -> None:
    """A job runs for four times its lease: its heartbeat keeps every other claim out, and
    it is recorded once, at its first attempt."""
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", free_port(), [])
    node = Node(load_settings(config))  # not started: this test is the only worker
    try:
        node.pipeline.job_lease_s, node.pipeline.job_heartbeat_s = 0.5, 0.1
        index_instance(node.db.session, rec(1, utcnow()))
        with node.db.session.begin() as session:
            series = session.scalars(select(Series)).one()
            session.add(
                Job(
                    job_key="ct-chest-lungs/1.0.0/1.2.2/g0",
                    study_fk=series.study_fk,
                    series_fk=series.pk,
                    model_name="ct-chest-lungs",
                    model_version="1.0.0",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
        running = threading.Event()

        def slow_model(_job: ClaimedJob) -> tuple[JobState, str, list[NewResult]]:
            running.set()
            time.sleep(2.0)
            return JobState.DONE, "results encoded", []

        node.pipeline._execute = slow_model  # type: ignore[method-assign]
        worker = threading.Thread(target=node.pipeline.run_one_job)
        worker.start()
        assert running.wait(10)
        deadline = time.monotonic() + 1.8
        while time.monotonic() < deadline:  # another worker looks, again and again
            assert claim_job(node.db.session, utcnow(), 0.5, ["ct-chest-lungs"]) is None
            time.sleep(0.05)
        worker.join(10)
        [job] = jobs(node)
        assert (job.state, job.attempts, job.lease_until) == (JobState.DONE.value, 1, None)
    finally:
        node.db.dispose()
