"""STOW-RS ingress end to end: a two-series chest CT posted to a node (plain HTTP, one
request) is stored, completed, routed, inferred and answered exactly as the same study
sent by C-STORE: the same instances indexed, the same series states, the same SEG + SR
(deterministic UIDs) at the PACS, and a DICOM Instances Transferred audit record naming
the token as the sender. And a node killed during STOW-RS requests never answered 200
for an instance it did not keep (``tests/crash/stow.py``).
"""

from __future__ import annotations

import os
import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import text

from dicom_ai_node.audit.node import audit_paths
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store import accounts
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import NodeProcess, free_port, wait_for_port, write_node_config
from ..crash.stow import run_stow_kills
from .stow_support import multipart, part10, post_stow, referenced_of
from .test_end_to_end import wait_for_results

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENDER = "PACS"  # the token's name: the study's calling AE title, results go back there


def _study() -> list[Dataset]:
    _, thin = make_ct_series(24, 128, 128, (2.5, 2.8, 2.8), seed=3101)
    study_uid = str(thin[0].StudyInstanceUID)
    _, thick = make_ct_series(
        20,
        128,
        128,
        (3.0, 2.8, 2.8),
        seed=3102,
        study_instance_uid=study_uid,
        series_description="CT THORAX 3mm",
    )
    for ds in thick:
        ds.SeriesNumber = 3
    return thin + thick


def _index(db_url: str) -> dict[str, object]:
    """What the index holds of the study: instances (and their sender), series states."""
    db = Database(db_url)
    try:
        with db.session() as session:
            instances = session.execute(
                text("SELECT sop_instance_uid, calling_ae_title FROM instance ORDER BY 1")
            ).all()
            series = session.execute(
                text("SELECT series_instance_uid, state, calling_ae_title FROM series ORDER BY 1")
            ).all()
    finally:
        db.dispose()
    return {"instances": [tuple(r) for r in instances], "series": [tuple(r) for r in series]}


def _results(pacs_dir: Path) -> list[tuple[str, str, str]]:
    found = wait_for_results(pacs_dir, 2)
    time.sleep(2)  # anything extra would arrive now
    found = [dcmread(p) for p in sorted(pacs_dir.iterdir()) if p.is_file()]
    return sorted((str(r.Modality), str(r.SOPInstanceUID), str(r.SeriesDescription)) for r in found)


def _run(folder: Path, pacs_port: int, stow: bool, datasets: list[Dataset]) -> NodeProcess:
    """A node in ``folder`` that has received ``datasets`` (by STOW-RS or C-STORE)."""
    db_url = f"sqlite:///{folder / 'node.db'}"
    port, web_port = free_port(), free_port()
    config = write_node_config(folder, db_url, port, [("PACS", pacs_port)], web_port=web_port)
    token = ""
    if stow:
        db = Database(db_url)
        db.migrate()
        _, token = accounts.add_token(db.session, SENDER, "sender", None, "", utcnow())
        db.dispose()
    node = NodeProcess(config, port, folder / "node.log")
    try:
        node.start()
        wait_for_port(web_port, 30.0, node.proc)
        if stow:
            body = multipart([part10(ds) for ds in datasets])
            answer = post_stow(f"http://127.0.0.1:{web_port}", token, body)
            assert answer.status_code == 200, answer.text
            assert sorted(referenced_of(answer)) == sorted(str(d.SOPInstanceUID) for d in datasets)
        else:
            peer = Peer("AI_NODE", "127.0.0.1", port)
            outcomes = send_datasets(datasets, peer, calling_ae_title=SENDER)
            assert all(o.delivered for o in outcomes)
    except BaseException:
        node.stop()
        raise
    return node


def _audited_transfer(folder: Path, study_uid: str, timeout_s: float = 60.0) -> ET.Element:
    log_file, _ = audit_paths(load_settings(folder / "node.toml", env={}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_file.exists():
            for line in log_file.read_bytes().splitlines():
                root = ET.fromstring(line)
                ident = root.find("EventIdentification")
                event = ident.find("EventID") if ident is not None else None
                if event is None or event.get("csd-code") != "110104":
                    continue
                if ident is None or ident.get("EventActionCode") != "C":  # received, not sent
                    continue
                objects = root.findall("ParticipantObjectIdentification")
                if objects and objects[0].get("ParticipantObjectID") == study_uid:
                    return root
        time.sleep(0.5)
    raise TimeoutError("no DICOM Instances Transferred record of the study")


def test_a_study_posted_by_stow_rs_gives_what_c_store_gives(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    pacs_port, pacs_dir = storescp
    datasets = _study()
    study_uid = str(datasets[0].StudyInstanceUID)
    by_cstore, by_stow = tmp_path / "c-store", tmp_path / "stow"
    by_cstore.mkdir()
    by_stow.mkdir()
    node = _run(by_cstore, pacs_port, False, datasets)
    try:
        results_cstore = _results(pacs_dir)
    finally:
        node.stop()
    for path in pacs_dir.iterdir():
        path.unlink()
    node = _run(by_stow, pacs_port, True, datasets)
    try:
        results_stow = _results(pacs_dir)
        received = _audited_transfer(by_stow, study_uid)
    finally:
        node.stop()
    assert {m for m, _, _ in results_stow} >= {"SEG", "SR"}
    assert results_stow == results_cstore
    index_cstore = _index(f"sqlite:///{by_cstore / 'node.db'}")
    index_stow = _index(f"sqlite:///{by_stow / 'node.db'}")
    assert len(index_stow["instances"]) == len(datasets)  # type: ignore[arg-type]
    assert index_stow == index_cstore
    source = received.findall("ActiveParticipant")[0]
    assert source.get("UserID") == SENDER


@pytest.mark.timeout(600)
def test_a_node_killed_during_stow_requests_never_answered_200_for_what_it_lost(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("DICOM_AI_NODE_CRASH_SEED") or random.SystemRandom().randrange(2**31))
    print(f"STOW-RS kill -9: seed {seed} (DICOM_AI_NODE_CRASH_SEED={seed} repeats the choices)")
    cycles = run_stow_kills(tmp_path / "stow-crash", 9, seed)
    for cycle in cycles:
        print(cycle.line())
    problems = [p for c in cycles for p in c.problems]
    assert not problems, "\n".join(problems)
    assert {c.point for c in cycles} == {"stream", "commit", "answer"}
    assert any(c.answered is None for c in cycles), "no kill landed before an answer"
    assert any(c.answered == 200 for c in cycles), "no request was answered before its kill"
