"""Result profiles over real sockets: each destination gets the result kinds it asks for.

A node (in this process, real listener) receives a CT by C-STORE. Its sender's AE table
entry, a real Orthanc, asks for every kind (SEG, SR, SC, KOS, GSPS, PDF) by DIMSE; a
second Orthanc, a ``send.destinations`` table, asks for every kind but SEG by STOW-RS.
Each object is fetched back from both Orthancs by WADO-RS (PS3.18 10.4) and passes
dciodvfy with 0 errors; the second holds no SEG; a re-send stores nothing new (same
UIDs); a re-run (revision) makes new series with their own numbers and descriptions.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.domain import DeliveryState, JobState
from dicom_ai_node.encode import result_series_number
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.result_kinds import RESULT_KINDS
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.actions import rerun_job
from dicom_ai_node.store.db import utcnow
from dicom_ai_node.store.resend import resend
from dicom_ai_node.store.tables import Delivery, Job, Result
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import REPO, free_port, write_node_config
from ..orthanc import Orthanc, OrthancFactory
from ..tools import dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.interop, pytest.mark.slow]

ALL = list(RESULT_KINDS)
#: What the STOW-RS destination asks for: every kind but the SEG.
BY_STOW = [k for k in ALL if k != "SEG"]
MODEL = "ct-chest-lungs"
MANIFEST = load_manifest(REPO / "models" / "ct_chest_lungs" / "model.toml")


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


def rows(node: Node) -> list[tuple[Job, Result, Delivery]]:
    """Every (job, result, delivery), oldest first."""
    with node.db.session() as session:
        query = (
            select(Job, Result, Delivery)
            .join(Result, Result.job_fk == Job.pk)
            .join(Delivery, Delivery.result_fk == Result.pk)
            .order_by(Delivery.pk)
        )
        return [(j, r, d) for j, r, d in session.execute(query)]


def jobs(node: Node) -> list[Job]:
    with node.db.session() as session:
        return list(session.scalars(select(Job).order_by(Job.pk)))


def all_delivered(node: Node, job_pk: int) -> bool:
    mine = [d for j, _, d in rows(node) if j.pk == job_pk]
    return bool(mine) and all(d.state == DeliveryState.DELIVERED.value for d in mine)


def wado_instance(pacs: Orthanc, result: Result, study_uid: str, folder: Path) -> Path:
    """One instance retrieved by WADO-RS (PS3.18 10.4.1.1.1), as a PS3.10 file."""
    url = (
        f"{pacs.url}/dicom-web/studies/{study_uid}/series/{result.series_instance_uid}"
        f"/instances/{result.sop_instance_uid}"
    )
    request = urllib.request.Request(
        url, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        content_type = answer.headers["Content-Type"]
        body = answer.read()
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = [p for p in body.split(b"--" + boundary) if p.strip() not in (b"", b"--")]
    assert len(parts) == 1, f"{len(parts)} parts for {result.sop_instance_uid}"
    payload = parts[0].split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.kind}-{result.sop_instance_uid}.dcm"
    path.write_bytes(payload)
    return path


def start(tmp_path: Path, archive: Orthanc, viewer: Orthanc) -> tuple[Node, int, str]:
    port = free_port()
    web = f"http://127.0.0.1:{viewer.http_port}/dicom-web"
    kinds = ", ".join(f'"{k}"' for k in BY_STOW)
    extra = f'destinations = [{{ address = "{web}", protocol = "dicomweb", results = [{kinds}] }}]'
    db = f"sqlite:///{tmp_path / 'node.db'}"
    config = write_node_config(tmp_path, db, port, [], 0.5, extra)
    kinds = ", ".join(f'"{k}"' for k in ALL)
    entry = (
        f'[[ae_table]]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {archive.dicom_port}\n'
        f"results = [{kinds}]\n"
    )
    config.write_text(config.read_text() + entry)
    node = Node(load_settings(config))
    node.start()
    return node, port, web


def check_objects(
    pacs: Orthanc, results: list[Result], study_uid: str, revision: int, folder: Path
) -> list[Dataset]:
    """Each result, read back by WADO-RS: 0 dciodvfy errors, its series number and text."""
    read: list[Dataset] = []
    first = result_series_number(MANIFEST.series_number, revision)
    for result in results:
        path = wado_instance(pacs, result, study_uid, folder)
        assert dciodvfy_errors(path) == [], (result.kind, path)
        ds = dcmread(path)
        assert str(ds.SOPInstanceUID) == result.sop_instance_uid
        offset = RESULT_KINDS[result.kind].series_offset
        if result.kind != "SR":  # a findings SR, when made, is offset 2
            assert int(ds.SeriesNumber) == first + offset, result.kind
        description = str(ds.SeriesDescription)
        assert description.startswith(f"AI {MODEL} "), description
        assert ("revised 1" in description) == (revision == 1), description
        read.append(ds)
    return read


def test_each_destination_gets_its_kinds_and_every_object_reads_back_valid(
    tmp_path: Path, orthanc_factory: OrthancFactory
) -> None:
    archive = orthanc_factory.start()  # the sender's AE: every kind, by DIMSE
    viewer = orthanc_factory.start()  # every kind but SEG, by STOW-RS
    node, port, web = start(tmp_path, archive, viewer)
    dimse = f"PACS@127.0.0.1:{archive.dicom_port}"
    try:
        _, datasets = make_ct_series(24, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=41)
        study_uid = str(datasets[0].StudyInstanceUID)
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="PACS"))
        wait_until(lambda: any(j.state == JobState.DONE.value for j in jobs(node)), 120, "job")
        [job] = jobs(node)
        wait_until(lambda: all_delivered(node, job.pk), 60, "every delivery")

        found = rows(node)
        made = {r.kind for _, r, _ in found}
        assert made == set(ALL), made
        to_web = [r for _, r, d in found if d.destination == web]
        assert {r.kind for r in to_web} == set(BY_STOW)
        to_archive = [r for _, r, d in found if d.destination == dimse]
        assert {r.kind for r in to_archive} == set(ALL)

        # every object, fetched back from the archive by WADO-RS, is valid and numbered
        objects = check_objects(archive, to_archive, study_uid, 0, tmp_path / "wado0")
        by_kind = {r.kind: ds for r, ds in zip(to_archive, objects, strict=True)}
        assert by_kind["SC"].BurnedInAnnotation == "YES"
        assert by_kind["PDF"].MIMETypeOfEncapsulatedDocument == "application/pdf"
        # the STOW-RS destination: each of its kinds read back valid, and no SEG
        check_objects(viewer, to_web, study_uid, 0, tmp_path / "wado-web")
        web_series = {r.series_instance_uid for r in to_web}
        assert {s["0020000E"]["Value"][0] for s in viewer.qido_series(study_uid)} == web_series
        count = len(archive.get("/instances"))

        # a re-send: the same objects again, nothing new at the archive
        queued = resend(node.db.session, dimse, "test", utcnow(), 3600.0, job_pk=job.pk)
        assert queued == len(to_archive)
        wait_until(lambda: all_delivered(node, job.pk), 60, "the re-send")
        assert len(archive.get("/instances")) == count
        assert {r.sop_instance_uid for _, r, _ in rows(node)} == {
            r.sop_instance_uid for _, r, _ in found
        }

        # a re-run: a revision with series of its own, "revised 1", superseding the first
        rerun_job(node.db.session, job.pk, "test", utcnow())
        wait_until(
            lambda: len(jobs(node)) == 2 and jobs(node)[1].state == JobState.DONE.value,
            120,
            "the revision",
        )
        second = jobs(node)[1]
        wait_until(lambda: all_delivered(node, second.pk), 60, "the revision's deliveries")
        revised = [r for j, r, d in rows(node) if j.pk == second.pk and d.destination == dimse]
        assert {r.kind for r in revised} == set(ALL)
        assert not {r.sop_instance_uid for r in revised} & {r.sop_instance_uid for r in to_archive}
        check_objects(archive, revised, study_uid, 1, tmp_path / "wado1")
    finally:
        node.stop()
