"""Integration tests of the Storage SCU against dcmtk storescp and small pynetdicom SCPs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset

from dicom_ai_node.errors import ConfigError, DeliveryError
from dicom_ai_node.send import scu
from dicom_ai_node.send.net import reactor_parked
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.testing.series import make_ct_series, write_series
from tests.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SLICES = 10


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 10.0) -> None:
    """Wait until something listens on ``port`` (bounded; fails if the process exits)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"storescp did not listen on {port} within {deadline_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group of ``proc``; SIGKILL if SIGTERM is not enough."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass


StartStorescp = Callable[..., tuple[Peer, Path]]


@pytest.fixture
def start_storescp(tmp_path: Path) -> Iterator[StartStorescp]:
    """Start dcmtk storescp on a free port; returns (peer, output folder)."""
    exe = require_tool("storescp")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str, ae_title: str = "STORESCP") -> tuple[Peer, Path]:
        out = tmp_path / f"received{len(procs)}"
        out.mkdir()
        port = _free_port()
        env = {**os.environ, "TCP_NODELAY": "1"}
        cmd = [exe, "-od", str(out), "+xa", "-aet", ae_title, *extra, str(port)]
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        _wait_listening(port, proc)
        return Peer(ae_title, "127.0.0.1", port), out

    try:
        yield start
    finally:
        for proc in procs:
            _stop(proc)


StartScp = Callable[..., Peer]


@pytest.fixture
def pynetdicom_scp() -> Iterator[StartScp]:
    """Start an in-process pynetdicom Storage SCP whose C-STORE handler is given."""
    servers: list[Any] = []

    def start(
        handler: Callable[[Any], int],
        *,
        ae_title: str = "TESTSCP",
        require_called_aet: bool = False,
        transfer_syntaxes: list[str] | None = None,
        sop_classes: list[str] | None = None,
        on_established: Callable[[Any], None] | None = None,
    ) -> Peer:
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = require_called_aet
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for sop_class in sop_classes or [CTImageStorage]:
            ae.add_supported_context(
                sop_class, transfer_syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
        handlers: list[Any] = [(evt.EVT_C_STORE, handler)]
        if on_established is not None:
            handlers.append((evt.EVT_ESTABLISHED, on_established))
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        assert server is not None
        servers.append(server)
        return Peer(ae_title, "127.0.0.1", server.server_address[1])

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


@pytest.fixture(scope="module")
def series() -> list[Dataset]:
    return make_ct_series(slices=SLICES, rows=64, columns=64)[1]


def _data_set_bytes(path: Path) -> bytes:
    """The encoded data set of a DICOM file, without preamble and File Meta Information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def _received(folder: Path) -> dict[str, Path]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in folder.iterdir()}


@pytest.mark.parametrize("as_files", [False, True], ids=["datasets", "files"])
def test_series_arrives_identical(
    as_files: bool,
    series: list[Dataset],
    start_storescp: StartStorescp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peer, out = start_storescp()
    sources = write_series(series, tmp_path / "sent")
    nodelay: list[int] = []
    real_send = Association.send_c_store

    def spy(self: Association, *args: Any, **kwargs: Any) -> Dataset:
        sock = self.dul.socket.socket  # type: ignore[union-attr]
        assert sock is not None
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return real_send(self, *args, **kwargs)

    monkeypatch.setattr(Association, "send_c_store", spy)
    if as_files:
        # Files must be streamed as encoded, never decoded and re-encoded.
        monkeypatch.setattr(scu, "dcmread", lambda *a, **k: pytest.fail("file was decoded"))
    calls: list[tuple[int, int]] = []
    items: list[Dataset | Path] = list(sources) if as_files else list(series)

    outcomes = send_datasets(items, peer, progress=lambda done, total: calls.append((done, total)))

    assert [o.sop_instance_uid for o in outcomes] == [ds.SOPInstanceUID for ds in series]
    assert all(o.delivered and o.status == 0 for o in outcomes), outcomes
    assert calls == [(i, SLICES) for i in range(1, SLICES + 1)]
    assert nodelay and all(nodelay), "TCP_NODELAY not set on the association socket"
    received = _received(out)
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in series)
    for ds, source in zip(series, sources, strict=True):
        got = received[ds.SOPInstanceUID]
        assert _data_set_bytes(got) == _data_set_bytes(source)
        back = dcmread(got)
        assert back.SOPClassUID == CTImageStorage
        assert back.PixelData == ds.PixelData
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_closed_port_raises_quickly(series: list[Dataset]) -> None:
    peer = Peer("NOBODY", "127.0.0.1", _free_port())
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="cannot connect"):
        send_datasets(series[:1], peer, timeout_s=5)
    assert time.monotonic() - started < 3


def test_unknown_host_raises(series: list[Dataset]) -> None:
    with pytest.raises(DeliveryError, match="cannot connect"):
        send_datasets(series[:1], Peer("NOBODY", "no-such-host.invalid", 104), timeout_s=5)


def test_nothing_to_send_opens_no_association() -> None:
    assert send_datasets([], Peer("NOBODY", "127.0.0.1", _free_port())) == []


def test_wrong_called_ae_title_is_rejected(series: list[Dataset], pynetdicom_scp: StartScp) -> None:
    peer = pynetdicom_scp(lambda event: 0x0000, ae_title="RIGHT", require_called_aet=True)
    wrong = Peer("WRONG", peer.host, peer.port)
    with pytest.raises(DeliveryError, match=r"rejected.*reason Called AE title not recognised"):
        send_datasets(series[:1], wrong, timeout_s=5)


def test_refused_association(series: list[Dataset], start_storescp: StartStorescp) -> None:
    peer, _ = start_storescp("--refuse")
    with pytest.raises(DeliveryError, match=r"rejected by .*Rejected \(Permanent\)"):
        send_datasets(series[:1], peer, timeout_s=5)


def test_peer_abort_raises(series: list[Dataset], start_storescp: StartStorescp) -> None:
    peer, _ = start_storescp("--abort-after")
    with pytest.raises(DeliveryError, match="aborted or closed"):
        send_datasets(series[:2], peer, timeout_s=5)


def test_dimse_timeout_raises(series: list[Dataset], pynetdicom_scp: StartScp) -> None:
    def slow(event: Any) -> int:
        time.sleep(1.5)
        return 0x0000

    peer = pynetdicom_scp(slow)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"no C-STORE response within 0\.5 s"):
        send_datasets(series[:1], peer, timeout_s=0.5)
    assert time.monotonic() - started < 1.4


def test_silent_peer_is_reported_as_a_timeout(series: list[Dataset]) -> None:
    """A peer that accepts the connection but never answers the A-ASSOCIATE-RQ: pynetdicom
    aborts after the ACSE timeout, and the reason says it timed out, not that it aborted."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        peer = Peer("SILENT", "127.0.0.1", listener.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"no association response from .* within 0\.5 s"):
            send_datasets(series[:1], peer, timeout_s=0.5)
        assert time.monotonic() - started < 1.4


@pytest.mark.parametrize(
    ("status", "delivered"),
    [(0x0000, True), (0xB000, True), (0xB007, True), (0x0001, True), (0xA700, False)],
)
def test_status_classes(
    status: int, delivered: bool, series: list[Dataset], pynetdicom_scp: StartScp
) -> None:
    peer = pynetdicom_scp(lambda event: status)
    outcomes = send_datasets(series[:3], peer, timeout_s=5)
    assert [(o.status, o.delivered) for o in outcomes] == [(status, delivered)] * 3
    assert all(f"{status:04X}" in o.message for o in outcomes)


def test_contexts_planned_from_data(
    series: list[Dataset], pynetdicom_scp: StartScp, tmp_path: Path
) -> None:
    """Only the SOP class sent is proposed; a file is re-encoded when its own syntax is
    refused; data in a syntax the peer refused is reported, not sent."""
    proposed: list[tuple[str, list[str]]] = []
    stored: list[str] = []

    def on_established(event: Any) -> None:
        for cx in event.assoc.requestor.requested_contexts:
            proposed.append((cx.abstract_syntax, list(cx.transfer_syntax)))

    def handler(event: Any) -> int:
        stored.append(event.context.transfer_syntax)
        return 0x0000

    peer = pynetdicom_scp(
        handler, transfer_syntaxes=[ImplicitVRLittleEndian], on_established=on_established
    )
    files = write_series(series[:2], tmp_path / "files")
    rle = dcmread(files[1])
    rle.compress(RLELossless)
    outcomes = send_datasets([files[0], rle], peer, timeout_s=5)

    assert sorted(proposed) == [
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [RLELossless]),
    ]
    assert [o.delivered for o in outcomes] == [True, False]
    assert "not sent" in outcomes[1].message and outcomes[1].status is None
    assert stored == [ImplicitVRLittleEndian]


def test_reactor_is_parked_during_requests(pynetdicom_scp: StartScp) -> None:
    """Back-to-back requests: pynetdicom 3.0.4's own pause handshake can see a stale
    ``_is_paused`` and let the reactor thread poll for (and steal) the response
    (pydicom/pynetdicom#875); inside ``reactor_parked`` it must never poll."""
    peer = pynetdicom_scp(lambda event: 0x0000)
    ae = AE()
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    assert assoc.is_established
    polled_by_reactor: list[bool] = []
    real_get_msg = assoc.dimse.get_msg

    def spy(block: bool = False) -> Any:
        polled_by_reactor.append(threading.current_thread() is assoc)
        return real_get_msg(block=block)

    try:
        assoc.dimse.get_msg = spy  # type: ignore[method-assign]
        for _ in range(20):
            with reactor_parked(assoc):
                polled_by_reactor.clear()
                time.sleep(0.003)  # the reactor loop turns every 1 ms
                assert not any(polled_by_reactor)
    finally:
        assoc.release()


def _tiny(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_more_than_128_contexts_use_several_associations(pynetdicom_scp: StartScp) -> None:
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts[:130]]
    associations: list[int] = []
    lock = threading.Lock()

    def on_established(event: Any) -> None:
        with lock:
            associations.append(len(event.assoc.requestor.requested_contexts))

    peer = pynetdicom_scp(lambda event: 0x0000, sop_classes=classes, on_established=on_established)
    items = [_tiny(c) for c in classes]
    outcomes = send_datasets(items, peer, timeout_s=5)
    assert all(o.delivered for o in outcomes)
    assert [o.sop_instance_uid for o in outcomes] == [ds.SOPInstanceUID for ds in items]
    assert associations == [128, 2]


def test_unreadable_file_is_reported(
    series: list[Dataset], start_storescp: StartStorescp, tmp_path: Path
) -> None:
    peer, _ = start_storescp()
    good = write_series(series[:1], tmp_path / "files")[0]
    outcomes = send_datasets([tmp_path / "missing.dcm", good], peer, timeout_s=5)
    assert [o.delivered for o in outcomes] == [False, True]
    assert "cannot read" in outcomes[0].message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PACS@pacs.example.org:104", Peer("PACS", "pacs.example.org", 104)),
        ("A B@10.0.0.1:11112", Peer("A B", "10.0.0.1", 11112)),
        ("ME@[::1]:4242", Peer("ME", "::1", 4242)),
    ],
)
def test_peer_parse(text: str, expected: Peer) -> None:
    assert Peer.parse(text) == expected
    assert Peer.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "pacs.example.org:104",
        "@host:104",
        "X" * 17 + "@host:104",
        "BAD\\AE@host:104",
        "BAD\tAE@host:104",
        "AE@host:0",
        "AE@host:65536",
        "AE@host:port",
        "AE@host",
        "AE@:104",
        "ÄE@host:104",
    ],
)
def test_peer_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        Peer.parse(text)
