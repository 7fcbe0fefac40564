"""Receive: the event-driven association reactors are the ones serving, and behave.

Real sockets on free ports, the node's own SCP, a SQLite index in a temp folder.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.dimse import DIMSEServiceProvider

from dicom_ai_node.receive import server as receive_server
from dicom_ai_node.receive import status
from dicom_ai_node.receive.association import EventDrivenAssociation
from dicom_ai_node.receive.dul import EventDrivenDUL
from dicom_ai_node.receive.scp import ScpConfig, StorageSCP
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.store.ingest import Ingest
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import free_port, rss_mb, serving

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StorageSCP]:
    files = FileStore(tmp_path / "storage", fsync=False)
    with serving(files, f"sqlite:///{tmp_path / 'node.db'}") as (scp, _):
        yield scp


def _associate(port: int) -> tuple[AE, object]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="AI_NODE")
    assert assoc.is_established
    return ae, assoc


def _served(scp: StorageSCP) -> list[object]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if scp.ae.active_associations:
            return list(scp.ae.active_associations)
        time.sleep(0.01)
    raise AssertionError("no association on the server side")


def test_the_event_driven_reactors_serve_with_nodelay(server: StorageSCP) -> None:
    assert receive_server.is_supported()
    ae, assoc = _associate(server.port)
    try:
        [served] = _served(server)
        assert isinstance(served, EventDrivenAssociation)
        assert isinstance(served.dul, EventDrivenDUL)
        # C-STORE responses are encoded directly (same bytes: tests/unit/test_receive_encoding)
        assert type(served.dimse).send_msg is not DIMSEServiceProvider.send_msg
        # pynetdicom's per-message logging handlers are off while its logger drops INFO
        recv_handlers = [h for h, _ in served.get_handlers(evt.EVT_DIMSE_RECV)]
        assert standard_dimse_recv_handler not in recv_handlers
        sock = served.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        for _ in range(50):
            assert int(assoc.send_c_echo().Status) == status.SUCCESS
    finally:
        assoc.release()
        ae.shutdown()
    assert assoc.is_released
    deadline = time.monotonic() + 5
    while server.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.ae.active_associations


def _thread_cpu_s(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process (Linux /proc)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_an_idle_association_does_not_poll(server: StorageSCP) -> None:
    """pynetdicom's loops poll every 0.1-1 ms; ours wait, so an idle association costs ~no CPU."""
    ae, assoc = _associate(server.port)
    try:
        [served] = _served(server)
        threads = [served.native_id, served.dul.native_id]
        before = sum(_thread_cpu_s(t) for t in threads)
        time.sleep(1.0)
        cpu = sum(_thread_cpu_s(t) for t in threads) - before
        assert cpu < 0.02, f"the server's threads used {cpu:.3f} s of CPU in 1 s idle"
    finally:
        assoc.release()
        ae.shutdown()


def test_stores_and_aborts_are_handled(server: StorageSCP) -> None:
    _, datasets = make_ct_series(5, 32, 32, seed=11)
    outcomes = send_datasets(datasets, Peer("AI_NODE", "127.0.0.1", server.port))
    assert all(o.delivered for o in outcomes)
    ae, assoc = _associate(server.port)
    assoc.abort()
    ae.shutdown()
    deadline = time.monotonic() + 5
    while server.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.ae.active_associations


def test_a_peer_closing_mid_pdu_leaves_the_server_serving(server: StorageSCP) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"\x01\x00\x00")  # the start of a PDU header, then gone
    time.sleep(0.2)
    ae, assoc = _associate(server.port)
    try:
        assert int(assoc.send_c_echo().Status) == status.SUCCESS
    finally:
        assoc.release()
        ae.shutdown()


def test_other_pynetdicom_versions_get_the_stock_reactors(
    server: StorageSCP, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert not receive_server.is_supported("3.1.0")
    monkeypatch.setattr(receive_server, "is_supported", lambda version=None: False)
    db = Database(f"sqlite:///{tmp_path / 'other.db'}")
    db.migrate()
    scp = StorageSCP(
        ScpConfig(ae_title="AI_NODE", host="127.0.0.1", port=free_port()),
        Ingest(FileStore(tmp_path / "other", fsync=False), db.session, utcnow),
    )
    scp.start()
    try:
        ae, assoc = _associate(scp.port)
        try:
            [served] = _served(scp)
            assert not isinstance(served, EventDrivenAssociation)
            assert int(assoc.send_c_echo().Status) == status.SUCCESS
        finally:
            assoc.release()
            ae.shutdown()
    finally:
        scp.stop()
        db.dispose()


def test_a_p_data_pdu_whose_item_overruns_it_aborts_only_that_association(
    server: StorageSCP,
) -> None:
    """A PDV item longer than its P-DATA-TF PDU (PS3.8 9.3.5) is refused with an A-ABORT."""
    ae, assoc = _associate(server.port)
    try:
        item = (1000).to_bytes(4, "big") + b"\x01\x03" + b"x" * 10  # says 1000, holds 12
        pdu = b"\x04\x00" + len(item).to_bytes(4, "big") + item
        assoc.dul.socket.socket.sendall(pdu)
        deadline = time.monotonic() + 5
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_aborted
    finally:
        ae.shutdown()
    ae, assoc = _associate(server.port)
    try:
        assert int(assoc.send_c_echo().Status) == status.SUCCESS
    finally:
        assoc.release()
        ae.shutdown()


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux /proc")
def test_a_pdu_claiming_gigabytes_is_aborted_before_any_memory_is_spent(
    server: StorageSCP,
) -> None:
    """An A-ASSOCIATE-RQ header claiming 2 GiB: A-ABORT before any association, no buffer."""
    before = rss_mb()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"\x01\x00" + (2**31).to_bytes(4, "big") + b"\x00" * 64)
        reply = raw.recv(64)
        assert reply[:1] == b"\x07"  # A-ABORT
    assert rss_mb() - before < 64
    ae, assoc = _associate(server.port)
    try:
        assert int(assoc.send_c_echo().Status) == status.SUCCESS
    finally:
        assoc.release()
        ae.shutdown()


def test_a_p_data_pdu_longer_than_the_maximum_proposed_aborts(server: StorageSCP) -> None:
    """P-DATA-TF longer than the Maximum Length Received the node proposed (PS3.8 D.1)."""
    ae, assoc = _associate(server.port)
    sock = assoc.dul.socket.socket
    try:
        too_long = server.config.max_pdu + 1
        sock.sendall(b"\x04\x00" + too_long.to_bytes(4, "big"))
        deadline = time.monotonic() + 5
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_aborted
    finally:
        ae.shutdown()
        sock.close()  # pynetdicom's requestor leaves it open when the peer closes first
