"""Receive over real sockets, on SQLite and PostgreSQL: every transfer syntax stored byte-exact,
duplicates answered Success without a new row or job, conflicts and bad UIDs refused."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.filereader import _read_file_meta_info, read_preamble
from pynetdicom import AE
from sqlalchemy import create_engine, func, select, text

from dicom_ai_node.app import Node
from dicom_ai_node.errors import DeliveryError
from dicom_ai_node.receive import status
from dicom_ai_node.receive.gate import Limits
from dicom_ai_node.receive.scp import StorageSCP
from dicom_ai_node.send.net import streamed_files
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.files import FREE_SPACE_TTL_S, FileStore
from dicom_ai_node.store.tables import Instance, Job, Series
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import free_port, serving, write_node_config

pytestmark = pytest.mark.integration

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
# one pydicom test file per transfer syntax the node must accept
BY_SYNTAX = {
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",  # implicit VR little endian
    "1.2.840.10008.1.2.1": "CT_small.dcm",  # explicit VR little endian
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "JPEG-lossy.dcm",  # JPEG extended
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",  # JPEG 2000
    "1.2.840.10008.1.2.5": "MR_small_RLE.dcm",  # RLE lossless
}


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta information: the data set as encoded."""
    with path.open("rb") as fp:
        read_preamble(fp, False)
        _read_file_meta_info(fp)
        return fp.read()


@pytest.fixture
def scp(tmp_path: Path, db_url: str) -> Iterator[tuple[StorageSCP, Database]]:
    # with spare files: the byte-exact tests go through a spare overwritten and cut to size
    with serving(FileStore(tmp_path / "storage", spare_budget_bytes=4 * 1024 * 1024), db_url) as s:
        yield s


def count(db: Database, model: type) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("syntax", sorted(BY_SYNTAX))
def test_every_transfer_syntax_is_stored_byte_exact(
    scp: tuple[StorageSCP, Database], syntax: str
) -> None:
    server, db = scp
    source = TEST_FILES / BY_SYNTAX[syntax]
    assert str(dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    # propose only the file's own syntax, so what goes over the wire is the file's data set
    meta = dcmread(source, stop_before_pixels=True).file_meta
    spares = server.ingest.files.spares
    assert spares is not None
    spares.fill(size=source.stat().st_size)  # a spare (rounded up) for this instance
    ready = spares.count()
    assert ready > 0
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [syntax])
    assoc = ae.associate("127.0.0.1", server.port, ae_title="AI_NODE")
    try:
        assert assoc.is_established
        with streamed_files():  # the file's bytes as they are, not decoded and re-encoded
            assert int(assoc.send_c_store(source).Status) == status.SUCCESS
    finally:
        assoc.release()
        ae.shutdown()
    with db.session() as session:
        row = session.scalars(select(Instance)).one()
    stored = server.ingest.files.absolute(row.path)
    assert dataset_bytes(stored) == dataset_bytes(source)
    assert spares.count() == ready - 1  # it went through a spare
    assert row.transfer_syntax_uid == syntax
    assert not list(server.ingest.files.tmp.glob("*.part"))  # only spares are left


def test_duplicate_is_success_without_new_row_and_conflict_is_refused(
    scp: tuple[StorageSCP, Database],
) -> None:
    server, db = scp
    _, datasets = make_ct_series(4, 32, 32, seed=7)
    peer = Peer("AI_NODE", "127.0.0.1", server.port)
    assert all(o.delivered for o in send_datasets(datasets, peer))
    assert all(o.status == status.SUCCESS for o in send_datasets(datasets, peer))
    assert count(db, Instance) == 4
    with db.session() as session:
        assert session.scalars(select(Series.instance_count)).one() == 4
    changed = datasets[0]
    changed.PixelData = bytes(len(changed.PixelData))
    [outcome] = send_datasets([changed], peer)
    assert outcome.status == status.DUPLICATE_SOP_INSTANCE and not outcome.delivered
    assert count(db, Instance) == 4
    files = list((server.ingest.files.root / "instances").rglob("*.dcm"))
    assert len(files) == 4  # the first copy is kept, the conflicting one is not


def _store_raw(port: int, ds_sop_class: str, dataset: object, called: str = "AI_NODE") -> int:
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(ds_sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    try:
        assert assoc.is_established
        result = assoc.send_c_store(dataset)
        return int(result.Status)
    finally:
        assoc.release()
        ae.shutdown()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_bad_uids_are_refused_and_nothing_is_written(scp: tuple[StorageSCP, Database]) -> None:
    server, db = scp
    _, datasets = make_ct_series(1, 16, 16, seed=8)
    ds = datasets[0]
    ds.SeriesInstanceUID = "1.2.3/../../etc"
    assert _store_raw(server.port, ds.SOPClassUID, ds) == status.CANNOT_UNDERSTAND
    ds.SeriesInstanceUID = "1.2.3"
    del ds.StudyInstanceUID
    assert _store_raw(server.port, ds.SOPClassUID, ds) == status.CANNOT_UNDERSTAND
    assert count(db, Instance) == 0
    assert not list(server.ingest.files.root.rglob("*.dcm"))


def test_storage_below_its_reserve_is_refused_with_a700(tmp_path: Path, db_url: str) -> None:
    """Out of resources (PS3.4 B.2.3): 0xA700, and nothing written or indexed."""
    files = FileStore(tmp_path / "storage", min_free_bytes=2**62)  # more than any disk
    with serving(files, db_url) as (server, db):
        _, datasets = make_ct_series(2, 16, 16, seed=9)
        peer = Peer("AI_NODE", "127.0.0.1", server.port)
        outcomes = send_datasets(datasets, peer)
        assert [o.status for o in outcomes] == [status.OUT_OF_RESOURCES] * 2
        assert count(db, Instance) == 0
        assert not list(files.root.rglob("*.dcm")) and not list(files.tmp.iterdir())
        files.min_free_bytes = 1  # space is back: accepted again without a restart
        time.sleep(FREE_SPACE_TTL_S + 0.05)
        assert all(o.delivered for o in send_datasets(datasets, peer))
        assert count(db, Instance) == 2


class _DiskFillsUp(FileStore):
    """A file store whose disk fills up in the middle of the next write (ENOSPC)."""

    def _write_parts(self, fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        os.write(fd, bytes(parts[0])[:100])  # part of the file reaches the disk, then:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_disk_filling_up_mid_write_gives_a700_and_leaves_nothing(
    tmp_path: Path, db_url: str
) -> None:
    """ENOSPC during the write: 0xA700, the temp file removed, the index untouched."""
    files = _DiskFillsUp(tmp_path / "storage", spare_budget_bytes=1024 * 1024)
    assert files.spares is not None
    files.spares.fill(size=16 * 1024)
    spares = files.spares.count()
    with serving(files, db_url) as (server, db):
        _, datasets = make_ct_series(2, 32, 32, seed=14)
        outcomes = send_datasets(datasets, Peer("AI_NODE", "127.0.0.1", server.port))
        assert [o.status for o in outcomes] == [status.OUT_OF_RESOURCES] * 2
        assert count(db, Instance) == 0 and count(db, Series) == 0
        assert not list(files.root.rglob("*.dcm")) and not list(files.tmp.glob("*.part"))
        assert files.spares.count() == spares - 2  # the spares written to are gone too
        assert len(list(files.tmp.glob("*.spare"))) == spares - 2


def test_wrong_called_ae_title_is_rejected(scp: tuple[StorageSCP, Database]) -> None:
    server, _ = scp
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title="SOMEONE_ELSE")
    try:
        assert assoc.is_rejected
    finally:
        ae.shutdown()


def test_duplicate_resend_makes_no_new_job(tmp_path: Path, db_url: str) -> None:
    """The whole node in-process: a re-sent series after routing adds no row and no job."""
    port = free_port()
    settings = load_settings(write_node_config(tmp_path, db_url, port, [], quiet_s=0.5))
    node = Node(settings)
    try:
        node.start()
        _, datasets = make_ct_series(24, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=9)
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="MODALITY"))
        deadline = time.monotonic() + 60
        while count(node.db, Job) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(node.db, Job) == 1
        assert all(
            o.status == status.SUCCESS
            for o in send_datasets(datasets, peer, calling_ae_title="MODALITY")
        )
        time.sleep(1.5)  # three quiet periods: any wrong re-open would have made a job now
        assert count(node.db, Job) == 1
        assert count(node.db, Instance) == 24
    finally:
        node.stop()


def test_a_data_set_larger_than_the_bound_aborts_and_stores_nothing(tmp_path: Path) -> None:
    """dicom.max_instance_mb: a larger data set aborts the association while it arrives."""
    files = FileStore(tmp_path / "storage", fsync=False)
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with serving(files, db_url, Limits(max_message_bytes=64 * 1024)) as (server, db):
        peer = Peer("AI_NODE", "127.0.0.1", server.port)
        _, big = make_ct_series(1, 256, 256, seed=12)  # 128 KiB of pixels
        with pytest.raises(DeliveryError, match="aborted"):
            send_datasets(big, peer)
        assert count(db, Instance) == 0 and not list(files.root.rglob("*.dcm"))
        _, small = make_ct_series(2, 64, 64, seed=13)  # 8 KiB each: still served
        assert all(o.delivered for o in send_datasets(small, peer))
        assert count(db, Instance) == 2


def test_the_node_accepts_only_its_ae_table_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dicom.accept_only_known_callers: [[ae_table]] entries, from their hosts, get in."""
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    monkeypatch.setenv("DICOM_AI_NODE_DICOM_ACCEPT_ONLY_KNOWN_CALLERS", "true")
    settings = load_settings(write_node_config(tmp_path, db_url, port, [("MODALITY", 104)]))
    assert settings.dicom.accept_only_known_callers
    node = Node(settings)
    try:
        node.start()
        _, datasets = make_ct_series(2, 16, 16, seed=15)
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="MODALITY"))
        with pytest.raises(DeliveryError, match="rejected"):
            send_datasets(datasets, peer, calling_ae_title="STRANGER")
    finally:
        node.stop()


@contextlib.contextmanager
def _database_locked(db_url: str) -> Iterator[None]:
    """Another client holds the lock the index needs (SQLite: the write lock; PG: series)."""
    if db_url.startswith("sqlite"):
        con = sqlite3.connect(db_url.split("sqlite:///", 1)[1], isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
        return
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE series IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_a_request_served_longer_than_the_network_timeout_still_gets_its_answer(
    tmp_path: Path, db_url: str
) -> None:
    """The idle timeout is the peer's silence, not the node's own work: a C-STORE that
    waits for a locked index longer than ``dicom.network_timeout_s`` gets its 0xA700,
    where the association used to be aborted by the node's own idle timer."""
    files = FileStore(tmp_path / "storage")
    with serving(files, db_url, lock_timeout_s=0.8, network_timeout_s=1.0) as (server, db):
        _, datasets = make_ct_series(1, 16, 16, seed=17)
        peer = Peer("AI_NODE", "127.0.0.1", server.port)
        with _database_locked(db_url):
            started = time.monotonic()
            [outcome] = send_datasets(datasets, peer)
            waited = time.monotonic() - started
        assert waited > 1.0, waited  # three tries of 0.8 s: longer than the timeout
        assert outcome.status == status.OUT_OF_RESOURCES, outcome
        assert all(o.delivered for o in send_datasets(datasets, peer))
        assert count(db, Instance) == 1


def test_a_locked_database_gives_a700_in_bounded_time_then_recovers(
    tmp_path: Path, db_url: str
) -> None:
    """Never Success without the commit, and never a hang: 0xA700 after bounded retries."""
    files = FileStore(tmp_path / "storage")
    with serving(files, db_url, lock_timeout_s=0.3) as (server, db):
        _, datasets = make_ct_series(2, 16, 16, seed=16)
        peer = Peer("AI_NODE", "127.0.0.1", server.port)
        with _database_locked(db_url):
            started = time.monotonic()
            [outcome] = send_datasets(datasets[:1], peer)
            assert outcome.status == status.OUT_OF_RESOURCES
            assert time.monotonic() - started < 10
        assert count(db, Instance) == 0 and not list(files.root.rglob("*.dcm"))
        assert all(o.delivered for o in send_datasets(datasets, peer))  # the lock is gone
        assert count(db, Instance) == 2
