"""Receive: the gate before associations (idle, slow and surplus connections), over sockets."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt

from dicom_ai_node.receive import status
from dicom_ai_node.receive.gate import Limits, resolve_callers
from dicom_ai_node.receive.scp import StorageSCP
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.testing.series import make_ct_series, write_series

from ..conftest import dcmtk_env, require_exe, rss_mb, serving

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., StorageSCP]]:
    """Start listeners with the given limits; all stopped at teardown."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def make(**limits: Any) -> StorageSCP:
            n = next(numbers)  # a fresh index and storage folder for each
            files = FileStore(tmp_path / f"storage{n}", fsync=False)
            db_url = f"sqlite:///{tmp_path / f'node{n}.db'}"
            server, _ = stack.enter_context(serving(files, db_url, Limits(**limits)))
            return server

        yield make


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (recv returns b"" or resets) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def _associate(port: int) -> tuple[AE, Any, list[Any]]:
    """An association attempt from a pynetdicom SCU; returns the PDUs it received."""
    received: list[Any] = []
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(VERIFICATION)
    handlers = [(evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))]
    assoc = ae.associate("127.0.0.1", port, ae_title="AI_NODE", evt_handlers=handlers)
    return ae, assoc, received


def test_idle_connections_do_not_lock_out_a_sender(make_server: Callable[..., StorageSCP]) -> None:
    """50 connections that never send a request, with room for 2 associations."""
    server = make_server(max_associations=2, max_pending_connections=64)
    _, datasets = make_ct_series(3, 16, 16, seed=21)
    with ExitStack() as stack:
        started = time.monotonic()
        for _ in range(50):  # a burst: the listen backlog holds them (socketserver's is 5)
            stack.enter_context(_connect(server.port))
        outcomes = send_datasets(datasets, Peer("AI_NODE", "127.0.0.1", server.port))
        assert all(o.status == status.SUCCESS for o in outcomes)
        assert time.monotonic() - started < 2.5  # no SYN retransmit (1 s each) on the way


def test_beyond_the_maximum_is_rejected_as_temporarily_congested(
    make_server: Callable[..., StorageSCP],
) -> None:
    server = make_server(max_associations=2)
    held = [_associate(server.port) for _ in range(2)]
    try:
        assert all(assoc.is_established for _, assoc, _ in held)
        ae, assoc, received = _associate(server.port)
        ae.shutdown()
        assert assoc.is_rejected
        [rj] = received
        # PS3.8 9.3.4: rejected-transient, service-provider (presentation), congestion
        assert (rj.result, rj.source, rj.reason_diagnostic) == (2, 3, 1)
    finally:
        for ae, assoc, _ in held:
            assoc.release()
            ae.shutdown()
    # room again once they are released: the server frees a slot when its association
    # thread ends, a moment after the release reply, so a loaded machine may reject the
    # very next attempt as congested (transient); it must succeed within 5 s
    deadline = time.monotonic() + 5.0
    for _ in range(100):
        ae, assoc, _ = _associate(server.port)
        if assoc.is_established or time.monotonic() > deadline:
            break
        ae.shutdown()
        time.sleep(0.05)
    try:
        assert assoc.is_established
    finally:
        assoc.release()
        ae.shutdown()


def test_one_host_gets_at_most_its_share(make_server: Callable[..., StorageSCP]) -> None:
    server = make_server(max_associations=8, max_associations_per_address=1)
    ae1, first, _ = _associate(server.port)
    try:
        assert first.is_established
        ae2, second, received = _associate(server.port)
        ae2.shutdown()
        assert second.is_rejected and received[0].reason_diagnostic == 1
    finally:
        first.release()
        ae1.shutdown()


def test_a_request_that_never_completes_is_closed_at_its_deadline(
    make_server: Callable[..., StorageSCP],
) -> None:
    server = make_server(request_timeout_s=0.5)
    with _connect(server.port) as slow:
        slow.sendall(b"\x01\x00\x00")  # the start of an A-ASSOCIATE-RQ header, then nothing
        started = time.monotonic()
        assert _closed_within(slow, 5)
        assert 0.4 < time.monotonic() - started < 3


def test_waiting_connections_are_bounded(make_server: Callable[..., StorageSCP]) -> None:
    server = make_server(max_pending_connections=3)
    with ExitStack() as stack:
        waiting = [stack.enter_context(_connect(server.port)) for _ in range(3)]
        time.sleep(0.3)  # all three are in the gate
        extra = stack.enter_context(_connect(server.port))
        assert _closed_within(extra, 2)  # closed at once, nothing read
        assert not _closed_within(waiting[0], 0.2)  # the ones waiting are kept
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the gate empties as they close
        ae, assoc, _ = _associate(server.port)
        ok = assoc.is_established
        if ok:
            assoc.release()
        ae.shutdown()
        if ok:
            break
        time.sleep(0.1)
    assert ok


def test_a_first_pdu_that_is_not_a_request_is_aborted(
    make_server: Callable[..., StorageSCP],
) -> None:
    server = make_server()
    with _connect(server.port) as raw:
        raw.sendall(b"\x04\x00\x00\x00\x00\x06" + b"\x00\x00\x00\x02\x01\x03")  # a P-DATA-TF
        reply = raw.recv(64)
        assert reply[:1] == b"\x07"  # A-ABORT (PS3.8 9.3.8)
        assert _closed_within(raw, 2)


def test_only_known_callers_from_their_hosts(make_server: Callable[..., StorageSCP]) -> None:
    """Allow-list: TESTSCU from 127.0.0.1 only; others get 'calling AE not recognised'."""
    server = make_server(allowed_callers={"TESTSCU": frozenset({"127.0.0.1"})})
    ae, assoc, _ = _associate(server.port)
    try:
        assert assoc.is_established
    finally:
        assoc.release()
        ae.shutdown()
    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(VERIFICATION)
    received: list[Any] = []
    handlers = [(evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))]
    assoc = stranger.associate("127.0.0.1", server.port, ae_title="AI_NODE", evt_handlers=handlers)
    stranger.shutdown()
    assert assoc.is_rejected
    # PS3.8 9.3.4: rejected-permanent, service-user, calling-AE-title-not-recognized
    assert (received[0].result, received[0].source, received[0].reason_diagnostic) == (1, 1, 3)


def test_a_known_title_from_another_host_is_refused(
    make_server: Callable[..., StorageSCP],
) -> None:
    server = make_server(allowed_callers={"TESTSCU": frozenset({"192.0.2.7"})})
    ae, assoc, received = _associate(server.port)
    ae.shutdown()
    assert assoc.is_rejected and received[0].reason_diagnostic == 3


def test_hosts_of_the_ae_table_are_resolved() -> None:
    allowed = resolve_callers({"PACS": ["localhost", "127.0.0.2"], "GONE": ["no-such.invalid"]})
    assert "127.0.0.1" in allowed["PACS"] and "127.0.0.2" in allowed["PACS"]
    assert allowed["GONE"] == frozenset()


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux /proc")
def test_64_senders_at_once_while_200_connections_idle(
    make_server: Callable[..., StorageSCP], tmp_path: Path
) -> None:
    """64 dcmtk storescu processes store at once beside 200 silent connections; then a
    65th sender still gets in, and memory stays bounded."""
    storescu = require_exe("storescu")
    server = make_server(max_associations=64, max_associations_per_address=64)
    folder = tmp_path / "series"
    _, datasets = make_ct_series(8, 32, 32, seed=22)
    write_series(datasets, folder)
    before = rss_mb()
    with ExitStack() as stack:
        for _ in range(200):
            stack.enter_context(_connect(server.port))
        peak = [0]
        done = threading.Event()

        def watch() -> None:  # the most associations served at one time
            while not done.wait(0.005):
                peak[0] = max(peak[0], len(server.ae.active_associations))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        args = [storescu, "-aet", "SENDER", "-aec", "AI_NODE", "+sd"]
        senders = [
            subprocess.Popen(
                [*args, "127.0.0.1", str(server.port), str(folder)],
                env=dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(64)
        ]
        failures = []
        for proc in senders:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                failures.append(err.decode(errors="replace")[-300:])
        done.set()
        watcher.join(5)
        assert not failures, failures[:3]
        assert peak[0] >= 32  # they did overlap (64 at once in every run here)
        _, other = make_ct_series(1, 16, 16, seed=23)
        outcomes = send_datasets(other, Peer("AI_NODE", "127.0.0.1", server.port))
        assert outcomes[0].status == status.SUCCESS
    assert rss_mb() - before < 500
