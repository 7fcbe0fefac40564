"""Destinations that fail (issue 4): results are held, retried with capped exponential
backoff inside a window, delivered within a minute of a destination's return, and one
dead destination never delays another.

Real sockets and databases only: dcmtk storescp with its fault options (``--refuse``,
``--abort-after``, ``--abort-during``, ``--sleep-during``), a closed port, and a
pynetdicom SCP answering 0xA700 (Refused: Out of Resources, PS3.4 B.2.3). The finished
job whose SEG + SR wait in the outbox is recorded through the store's own functions
(``claim_job``, ``complete_job``), exactly as ``Pipeline.run_one_job`` leaves it, so no
model runs. Tests that check the retry schedule drive ``Deliverer.deliver`` with a clock
of their own; the others run a whole :class:`~dicom_ai_node.app.Node` in real time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import SegmentationStorage
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from dicom_ai_node import cli
from dicom_ai_node.app import Node
from dicom_ai_node.domain import (
    DeliveryState,
    JobState,
    Measurement,
    ModelOutput,
    SeriesState,
)
from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.infer.findings.measure import ML, MM3_PER_ML, VOLUME
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.send.deliver import Deliverer
from dicom_ai_node.send.net import enable_tcp_nodelay
from dicom_ai_node.send.senders import DELIVER_INTERVAL_S
from dicom_ai_node.settings import NodeSettings, SendSettings, load_settings
from dicom_ai_node.store.db import Database, as_utc, utcnow
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job
from dicom_ai_node.store.tables import Delivery, Event, Job, Patient, Series, Study
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import (
    REPO,
    dcmtk_env,
    free_port,
    require_exe,
    stop_process,
    wait_for_port,
    write_node_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = "outage-test"  # not in the registry: the node's workers never take its jobs
MANIFEST = load_manifest(REPO / "models" / "ct_chest_lungs" / "model.toml")
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused: Out of Resources


# -- a finished job in the outbox ------------------------------------------------------------
def finish_job(
    db: Database,
    files: FileStore,
    now: dt.datetime,
    destinations: Sequence[str],
    window_s: float,
    seed: int = 0,
) -> list[str]:
    """Record a done job whose SEG + SR are on disk and queued for ``destinations``.

    The source series (a small chest phantom) is only indexed, never stored; its
    results are real highdicom objects. Returns the results' SOP Instance UIDs.
    """
    phantom, source = make_ct_series(8, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=seed)
    first = source[0]
    with db.session.begin() as session:
        patient = Patient(patient_id=f"OUTAGE{seed}")
        session.add(patient)
        session.flush()
        study = Study(
            study_instance_uid=str(first.StudyInstanceUID), patient_fk=patient.pk, created_at=now
        )
        session.add(study)
        session.flush()
        series = Series(
            series_instance_uid=str(first.SeriesInstanceUID),
            study_fk=study.pk,
            modality="CT",
            instance_count=len(source),
            first_received_at=now,
            last_received_at=now,
            state=SeriesState.ROUTED.value,
            reason=f"routed to {MODEL}",
        )
        session.add(series)
        session.flush()
        session.add(
            Job(
                job_key=f"{MODEL}/1/{series.series_instance_uid}/g0",
                study_fk=study.pk,
                series_fk=series.pk,
                model_name=MODEL,
                model_version="1",
                created_at=now,
                updated_at=now,
            )
        )
    job = claim_job(db.session, now, 60.0, [MODEL])
    assert job is not None
    voxel_ml = float(np.prod(phantom.spacing_mm)) / MM3_PER_ML
    lungs = tuple(label for label in MANIFEST.labels if not label.instances)  # no nodules
    output = ModelOutput(
        labels=lungs,
        label_map=phantom.labels,
        measurements=tuple(
            Measurement(
                label.value,
                VOLUME,
                float(np.count_nonzero(phantom.labels == label.value)) * voxel_ml,
                ML,
            )
            for label in lungs
        ),
    )
    algorithm = MANIFEST.algorithm(device_uid(MANIFEST.name, MANIFEST.version))
    results = []
    for ds in encode_results(source, output, algorithm, job.job_key, content_datetime=now):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        relative = files.result_path(*uids)
        files.write(relative, buffer.getvalue())
        results.append(
            NewResult(
                kind="SEG" if ds.SOPClassUID == SegmentationStorage else "SR",
                sop_instance_uid=uids[2],
                sop_class_uid=str(ds.SOPClassUID),
                series_instance_uid=uids[1],
                path=relative,
            )
        )
    assert sorted(r.kind for r in results) == ["SEG", "SR"]
    complete_job(
        db.session, job, now, JobState.DONE, "results encoded", results, destinations, window_s, 0.1
    )
    return [r.sop_instance_uid for r in results]


def deliveries(db: Database, destination: str) -> list[Delivery]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.destination == destination).order_by(Delivery.pk)
            )
        )


def received(folder: Path) -> set[str]:
    """SOP Instance UIDs of the complete objects a storescp has written."""
    out = set()
    for path in folder.iterdir():
        with contextlib.suppress(InvalidDicomError, EOFError, OSError, AttributeError):
            out.add(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return out


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll (bounded) until ``predicate``; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


# -- destinations ----------------------------------------------------------------------------
StartStorescp = Callable[..., tuple[str, Path]]


@pytest.fixture
def start_pacs(tmp_path: Path) -> Iterator[StartStorescp]:
    """Start dcmtk storescp (AE PACS) with fault options; stopped at teardown.

    ``start(*options, port=None)`` returns (destination ``AE@HOST:PORT``, output folder).
    """
    exe = require_exe("storescp")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str, port: int | None = None) -> tuple[str, Path]:
        port = port or free_port()
        out = tmp_path / f"pacs-{port}"
        out.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [exe, "-aet", "PACS", "-od", str(out), "+xa", *options, str(port)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        wait_for_port(port, 15, proc)
        return f"PACS@127.0.0.1:{port}", out

    try:
        yield start
    finally:
        for proc in procs:
            stop_process(proc)


@pytest.fixture
def out_of_resources_scp() -> Iterator[tuple[str, list[str]]]:
    """A pynetdicom Storage SCP that answers every C-STORE with 0xA700; yields
    (destination, SOP Instance UIDs it was offered)."""
    offered: list[str] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        with lock:
            offered.append(str(event.request.AffectedSOPInstanceUID))
        return STATUS_OUT_OF_RESOURCES

    def on_open(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            enable_tcp_nodelay(sock)

    ae = AE(ae_title="FULL")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, on_open)],
    )
    assert server is not None
    try:
        yield f"FULL@127.0.0.1:{server.server_address[1]}", offered
    finally:
        server.shutdown()


# -- the retry schedule, on a clock of the test's own ------------------------------------------
class Clock:
    """A UTC clock that moves only when told (the network and database stay real)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def deliverer(tmp_path: Path, db_url: str) -> Iterator[Deliverer]:
    """A deliverer over a fresh index and storage, with small retry settings and its own clock."""
    settings = dataclasses.replace(
        NodeSettings(),
        send=SendSettings(timeout_s=1.0, retry_initial_s=1.0, retry_max_s=4.0, retry_window_s=60),
    )
    db = Database(db_url)
    db.migrate()
    try:
        yield Deliverer(settings, db, FileStore(tmp_path / "storage"), Clock())
    finally:
        db.dispose()


FAULTS = {
    "refuse": ("storescp", ("--refuse",), r"association rejected by PACS@.*Rejected \(Permanent\)"),
    "abort-after": ("storescp", ("--abort-after",), r"aborted or closed the connection"),
    "abort-during": ("storescp", ("--abort-during",), r"aborted or closed the connection"),
    # sleeps 5 s in each C-STORE, past the 1 s DIMSE timeout; while it sleeps the next
    # association request goes unanswered past the ACSE timeout
    "hang": (
        "storescp",
        ("--sleep-during", "5"),
        r"no (C-STORE|association) response .*within 1 s",
    ),
    "0xA700": ("a700", (), r"failure 0xA700 \(Refused: Out of Resources"),
    "closed-port": ("closed", (), r"cannot connect to"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_destination_keeps_results_pending_with_capped_exponential_backoff(
    fault: str, deliverer: Deliverer, request: pytest.FixtureRequest
) -> None:
    """(c) Each failure leaves both results pending, with the reason and status recorded,
    due again 1, 2, 4, 4, 4 s after each failed attempt (retry_initial_s 1, retry_max_s 4)."""
    kind, options, reason = FAULTS[fault]
    offered: list[str] = []
    if kind == "storescp":
        dest, _ = request.getfixturevalue("start_pacs")(*options)
    elif kind == "a700":
        dest, offered = request.getfixturevalue("out_of_resources_scp")
    else:
        dest = f"PACS@127.0.0.1:{free_port()}"
    clock = deliverer.clock
    assert isinstance(clock, Clock)
    uids = finish_job(deliverer.db, deliverer.files, clock.now, [dest], window_s=60)

    delays = []
    for attempt in range(1, 6):
        assert deliverer.deliver() == 2, f"attempt {attempt}: both results due"
        rows = deliveries(deliverer.db, dest)
        for row in rows:
            assert row.state == DeliveryState.PENDING.value and row.delivered_at is None
            assert row.attempts == attempt
            assert re.search(reason, row.last_error), row.last_error
        [next_at] = {as_utc(row.next_attempt_at) for row in rows}
        delays.append((next_at - clock.now).total_seconds())
        assert deliverer.deliver() == 0, "retried before its time"
        clock.now = next_at
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]  # doubling from retry_initial_s to retry_max_s
    if kind == "a700":
        assert {r.last_status for r in deliveries(deliverer.db, dest)} == {STATUS_OUT_OF_RESOURCES}
        assert sorted(offered) == sorted(uids * 5)  # offered on every attempt, never taken


def test_a_delivery_past_its_window_fails_with_the_reason_the_operator_reads(
    deliverer: Deliverer, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = f"PACS@127.0.0.1:{free_port()}"  # closed all along
    """(d) retry_window_s 10 s: attempts at 0, 1, 3, 7 and 10 s, then failed for good, with
    the last error in ``dicom-ai-node jobs`` (per destination and in the history)."""
    clock = deliverer.clock
    assert isinstance(clock, Clock)
    start = clock.now
    finish_job(deliverer.db, deliverer.files, start, [dest], window_s=10.0)
    config = tmp_path / "jobs.toml"
    config.write_text(f'[storage]\nroot = "{tmp_path / "storage"}"\ndatabase_url = "{db_url}"\n')

    def jobs_output() -> str:
        assert cli.main(["-c", str(config), "jobs"]) == 0
        return capsys.readouterr().out

    assert deliverer.deliver() == 2
    assert re.search(
        rf"2 result\(s\) to {re.escape(dest)}: pending, 1 attempt\(s\), next \S+ \S+ UTC"
        r" - cannot connect to",
        jobs_output(),
    )
    attempts_at = [0.0]
    while deliveries(deliverer.db, dest)[0].state == DeliveryState.PENDING.value:
        assert len(attempts_at) < 10, attempts_at
        clock.now = as_utc(deliveries(deliverer.db, dest)[0].next_attempt_at)
        attempts_at.append((clock.now - start).total_seconds())
        assert deliverer.deliver() == 2
    assert attempts_at == [0.0, 1.0, 3.0, 7.0, 10.0]  # the last at the end of the window
    rows = deliveries(deliverer.db, dest)
    assert {r.state for r in rows} == {DeliveryState.FAILED.value}
    assert all(r.attempts == 5 and "cannot connect to" in r.last_error for r in rows)
    clock.now += dt.timedelta(hours=1)
    assert deliverer.deliver() == 0  # never tried again
    out = jobs_output()
    assert re.search(
        rf"2 result\(s\) to {re.escape(dest)}: failed after 5 attempt\(s\), retry window over"
        r" - cannot connect to",
        out,
    ), out
    assert out.count(f"to {dest}: failed for good: cannot connect to") == 2  # the history
    with deliverer.db.session() as session:
        kinds = [e.kind for e in session.scalars(select(Event))]
    assert kinds.count("delivery") == 2


# -- a whole node in real time -----------------------------------------------------------------
@contextlib.contextmanager
def running_node(settings: NodeSettings) -> Iterator[Node]:
    node = Node(settings)
    try:
        node.start()
        yield node
    finally:
        node.stop()


def node_settings(tmp_path: Path, db_url: str, **send: Any) -> NodeSettings:
    settings = load_settings(write_node_config(tmp_path, db_url, free_port(), []))
    return dataclasses.replace(settings, send=SendSettings(**send))


def test_closed_port_comes_back_and_gets_its_results_while_a_healthy_one_is_never_delayed(
    tmp_path: Path, db_url: str, start_pacs: StartStorescp
) -> None:
    """(a) held results reach the returning destination within 60 s; (b) the healthy
    destination gets them promptly during the outage. Small backoff (0.5 s doubling,
    2 s cap) keeps it fast; the default cap is measured by the slow test below."""
    healthy, healthy_dir = start_pacs()
    dead_port = free_port()
    dead = f"PACS@127.0.0.1:{dead_port}"
    settings = node_settings(tmp_path, db_url, retry_initial_s=0.5, retry_max_s=2.0)
    with running_node(settings) as node:
        uids = finish_job(node.db, node.files, utcnow(), [dead, healthy], 3600.0)
        queued = time.monotonic()
        arrived = wait_until(lambda: received(healthy_dir) == set(uids), 20, "healthy delivery")
        healthy_s = arrived - queued
        print(f"\nhealthy destination got the results {healthy_s:.2f} s after they were queued")
        assert healthy_s < 5.0
        wait_until(
            lambda: all(r.attempts >= 3 for r in deliveries(node.db, dead)), 30, "three attempts"
        )
        for row in deliveries(node.db, dead):
            assert row.state == DeliveryState.PENDING.value
            assert "cannot connect to" in row.last_error and row.last_status is None
        assert {r.state for r in deliveries(node.db, healthy)} == {DeliveryState.DELIVERED.value}

        back = time.monotonic()
        _, late_dir = start_pacs(port=dead_port)
        done = wait_until(
            lambda: {r.state for r in deliveries(node.db, dead)} == {DeliveryState.DELIVERED.value},
            60,
            "held results delivered",
        )
        resumed_s = done - back
        print(f"held results delivered {resumed_s:.2f} s after the destination came back")
        assert received(late_dir) == set(uids)
        assert resumed_s < 60.0
        assert resumed_s < settings.send.retry_max_s + DELIVER_INTERVAL_S + 3.0


def test_a_hanging_destination_does_not_hold_a_healthy_one(
    tmp_path: Path, db_url: str, start_pacs: StartStorescp
) -> None:
    """(b) while one association to a destination hangs (it sleeps in C-STORE past the
    timeout), new results still reach the healthy destination at once."""
    healthy, healthy_dir = start_pacs()
    hanging, _ = start_pacs("--sleep-during", "60")
    timeout_s = 8.0
    settings = node_settings(tmp_path, db_url, timeout_s=timeout_s, retry_initial_s=1.0)
    with running_node(settings) as node:
        first = finish_job(node.db, node.files, utcnow(), [hanging, healthy], 3600.0, seed=1)
        wait_until(lambda: received(healthy_dir) == set(first), 20, "first results")
        second = finish_job(node.db, node.files, utcnow(), [hanging, healthy], 3600.0, seed=2)
        queued = time.monotonic()
        arrived = wait_until(
            lambda: received(healthy_dir) == set(first + second), 20, "second results"
        )
        # the hanging attempt (first job's results) was still waiting for its answer
        assert all(r.attempts == 0 for r in deliveries(node.db, hanging)[:2])
        healthy_s = arrived - queued
        print(f"\nhealthy destination served in {healthy_s:.2f} s while another one hung")
        assert healthy_s < 5.0
        wait_until(
            lambda: all(r.attempts >= 1 for r in deliveries(node.db, hanging)),
            3 * timeout_s,
            "the hanging attempts to time out",
        )
        for row in deliveries(node.db, hanging):
            assert row.state == DeliveryState.PENDING.value
            assert re.search(r"no (C-STORE|association) response .*within 8 s", row.last_error)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_with_the_default_backoff_results_follow_within_a_minute_of_the_worst_return(
    tmp_path: Path, start_pacs: StartStorescp
) -> None:
    """The acceptance figure with the default send settings (5 s doubling, 30 s cap): the
    destination comes back just after an attempt at the cap failed, the worst moment,
    and the held results still arrive within 60 s."""
    defaults = SendSettings()
    dead_port = free_port()
    dead = f"PACS@127.0.0.1:{dead_port}"
    settings = node_settings(tmp_path, f"sqlite:///{tmp_path / 'node.db'}")  # default [send]
    with running_node(settings) as node:
        finish_job(node.db, node.files, utcnow(), [dead], defaults.retry_window_s)
        # 5 + 10 + 20 s of backoff: after the 4th failure the next delay is the cap
        wait_until(lambda: all(r.attempts >= 4 for r in deliveries(node.db, dead)), 60, "the cap")
        back = time.monotonic()
        _, late_dir = start_pacs(port=dead_port)
        rows = deliveries(node.db, dead)
        assert all(r.attempts == 4 and r.state == DeliveryState.PENDING.value for r in rows)
        last_failure = max(as_utc(r.next_attempt_at) for r in rows) - dt.timedelta(
            seconds=defaults.retry_max_s
        )
        assert (utcnow() - last_failure).total_seconds() < 2.0  # it came back right after it
        done = wait_until(
            lambda: {r.state for r in deliveries(node.db, dead)} == {DeliveryState.DELIVERED.value},
            60,
            "held results delivered",
        )
        resumed_s = done - back
        print(f"\ndefault cap: held results delivered {resumed_s:.2f} s after the return")
        assert len(received(late_dir)) == 2
        assert resumed_s < 60.0
