"""Real images through the node end to end (issue 3, acceptance 3): CT, CR chest, CR
extremity, MR and US images that pydicom and pydicom-data ship, in their own transfer
syntaxes (JPEG 2000, JPEG lossless, big endian, ...), are sent over DICOM. Each is
stored, each series ends routed or "not routed" with a reason the operator reads, no
job fails, any results pass dciodvfy with 0 errors, and the node stays up."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.domain import JobState, SeriesState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.tables import Result, Series

from ..conftest import IN_CI, free_port, require_exe, write_node_config
from .test_pipeline import jobs, wait_until

pytestmark = pytest.mark.integration

#: (file, what it is): one image of each kind; files that hold the same SOP Instance
#: UID in other transfer syntaxes are left out (a re-send with other bytes is 0x0111).
#: pydicom-data's bad_sequence.dcm (UIDs of hexadecimal digits) is refused, below.
PYDICOM = [
    ("CT_small.dcm", "CT, 128x128, no body part"),
    ("MR_small.dcm", "MR, 64x64"),
    ("ExplVR_BigEnd.dcm", "US, explicit VR big endian"),
    ("J2K_pixelrep_mismatch.dcm", "CT head, JPEG 2000 lossless"),
]
PYDICOM_DATA = [
    ("693_J2KR.dcm", "CT head, JPEG 2000 lossless, no body part"),
    ("explicit_VR-UN.dcm", "CT abdomen (PANCREAS), JPEG 2000"),
    ("RG1_J2KI.dcm", "CR chest, JPEG 2000, 1955x1841"),
    ("RG3_J2KI.dcm", "CR extremity, JPEG 2000"),
    ("MR2_J2KI.dcm", "MR, JPEG 2000, 1024x1024"),
    ("emri_small.dcm", "enhanced MR, multi-frame"),
    ("US1_J2KI.dcm", "US, JPEG 2000, RGB"),
    ("OBXXXX1A.dcm", "US, palette colour"),
]


def _real_images() -> list[tuple[str, Dataset]]:
    try:
        import data_store
    except ImportError:
        message = "pydicom-data not installed (the test extra installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = Path(data_store.__file__).parent / "data"
    paths = [(name, get_testdata_file(name)) for name, _ in PYDICOM]
    paths += [(name, next(root.rglob(name), None)) for name, _ in PYDICOM_DATA]
    missing = [name for name, path in paths if path is None]
    assert not missing, missing
    return [(name, dcmread(path)) for name, path in paths]


def _bad_uids() -> Dataset:
    import data_store

    path = next((Path(data_store.__file__).parent / "data").rglob("bad_sequence.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


def test_real_images_are_stored_and_routed_or_not_with_a_reason(tmp_path: Path) -> None:
    images = _real_images()
    port = free_port()
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [], 0.5)
    node = Node(load_settings(config))
    try:
        node.start()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        for name, ds in images:
            [outcome] = send_datasets([ds], peer, calling_ae_title="MODALITY")
            assert outcome.delivered and outcome.status == 0x0000, (name, outcome)
        series_uids = {ds.SeriesInstanceUID for _, ds in images}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of the UIDs it sends
            [refused] = send_datasets([_bad_uids()], peer, calling_ae_title="MODALITY")
        assert refused.status == 0xC000, refused  # never a path, never stored

        def decided() -> list[Series]:
            with node.db.session() as session:
                rows = list(session.scalars(select(Series)))
            done = (SeriesState.ROUTED.value, SeriesState.NOT_ROUTED.value)
            settled = {r.series_instance_uid for r in rows if r.state in done}
            return rows if settled >= series_uids else []

        wait_until(lambda: bool(decided()), 90, "a routing decision for every series")
        for row in decided():
            assert row.reason, row.series_instance_uid
            assert "body part" in row.reason, row.reason  # how the region was decided
            print(f"{row.modality} {row.series_description!r}: {row.state}: {row.reason}")
        active = (JobState.QUEUED.value, JobState.RUNNING.value)
        wait_until(lambda: not [j for j in jobs(node) if j.state in active], 120, "jobs ended")
        for job in jobs(node):
            assert job.state in (JobState.DONE.value, JobState.QUALITY_FAILED.value), (
                job.model_name,
                job.state,
                job.reason,
            )
        with node.db.session() as session:
            results = [node.files.absolute(r.path) for r in session.scalars(select(Result))]
    finally:
        node.stop()
    dciodvfy = require_exe("dciodvfy") if results else ""
    for path in results:
        done = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
        errors = [
            line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == [], (path.name, errors[:5])
