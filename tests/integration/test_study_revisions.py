"""One result set per (study, model) over real sockets: a better series after delivery makes
exactly one revision whose SR names its predecessor (policy rerun) or nothing new (policy
record); the node's own results and the whole study sent again make no job and no result.

The node runs in this process on a real listener; dcmtk storescp is the PACS.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.domain import JobState, SeriesState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.tables import Event, Job, Series

from ..conftest import free_port, stop_process, write_node_config
from ..studies import ChestCtStudy, chest_ct_study
from ..tools import dciodvfy_errors
from .test_pipeline import readable, start_storescp, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "ct-chest-lungs"


def jobs(node: Node) -> list[Job]:
    with node.db.session() as session:
        return list(session.scalars(select(Job).order_by(Job.pk)))


def series_states(node: Node) -> dict[str, tuple[str, str]]:
    with node.db.session() as session:
        return {s.series_instance_uid: (s.state, s.reason) for s in session.scalars(select(Series))}


def event_kinds(node: Node) -> list[str]:
    with node.db.session() as session:
        return list(session.scalars(select(Event.kind).order_by(Event.pk)))


def send(port: int, datasets: list[Dataset]) -> None:
    outcomes = send_datasets(datasets, Peer("AI_NODE", "127.0.0.1", port), calling_ae_title="PACS")
    assert all(o.delivered for o in outcomes)


def results_at(pacs: Path, count: int, timeout_s: float = 120.0) -> list[Dataset]:
    """Wait (bounded) until the PACS holds ``count`` objects; fail on more."""
    wait_until(lambda: len(readable(pacs)) >= count, timeout_s, f"{count} results at the PACS")
    found = readable(pacs)
    assert len(found) == count, [ds.SeriesDescription for ds in found]
    return found


def referenced_series(ds: Dataset) -> set[str]:
    """The source series a SEG or SR was built on (its evidence / referenced series)."""
    if ds.Modality == "SEG":
        return {str(item.SeriesInstanceUID) for item in ds.ReferencedSeriesSequence}
    return {
        str(series.SeriesInstanceUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
    }


def start_node(tmp_path: Path, db_url: str, pacs_port: int, policy: str) -> tuple[Node, int]:
    port = free_port()
    extra = f'[assemble]\nlate_instance_policy = "{policy}"\nstudy_quiet_period_s = 2.0\n'
    config = write_node_config(tmp_path, db_url, port, [("PACS", pacs_port)], 1.0)
    config.write_text(config.read_text().replace("[assemble]\n", extra, 1))
    node = Node(load_settings(config))
    node.start()
    return node, port


@pytest.fixture(scope="module")
def study() -> ChestCtStudy:
    return chest_ct_study(seed=1401, slices=48, size=192)


def test_a_better_series_after_delivery_makes_one_revision_naming_its_predecessor(
    tmp_path: Path, db_url: str, study: ChestCtStudy
) -> None:
    pacs_port, pacs = free_port(), tmp_path / "pacs"
    storescp = start_storescp(pacs_port, pacs)
    node: Node | None = None
    try:
        node, port = start_node(tmp_path, db_url, pacs_port, "rerun")
        send(port, study.topogram + study.thick)
        first = results_at(pacs, 2)
        assert {s for ds in first for s in referenced_series(ds)} == {
            str(study.thick[0].SeriesInstanceUID)
        }
        send(port, study.thin)  # the better series, after the results were delivered
        found = results_at(pacs, 4)
        revised = [ds for ds in found if ds.SOPInstanceUID not in {d.SOPInstanceUID for d in first}]
        assert sorted(ds.SeriesDescription for ds in revised) == [
            f"AI {MODEL} 2.0.0 SEG revised 1",
            f"AI {MODEL} 2.0.0 SR revised 1",
        ]
        assert sorted(int(ds.SeriesNumber) for ds in first) == [9100, 9101]
        assert sorted(int(ds.SeriesNumber) for ds in revised) == [9110, 9111]
        thin = str(study.thin[0].SeriesInstanceUID)
        assert all(referenced_series(ds) == {thin} for ds in revised)
        [old_sr] = [ds for ds in first if ds.Modality == "SR"]
        [new_sr] = [ds for ds in revised if ds.Modality == "SR"]
        [item] = new_sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence
        assert item.SeriesInstanceUID == old_sr.SeriesInstanceUID
        assert item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old_sr.SOPInstanceUID
        for path in sorted(pacs.iterdir()):
            assert dciodvfy_errors(path) == [], path.name
        old, new = jobs(node)
        assert (old.state, new.state) == (JobState.SUPERSEDED, JobState.DONE)
        assert (new.revision, new.predecessor_fk) == (1, old.pk)

        # a PACS forwards the whole study back, the node's results included: no new job
        send(port, study.topogram + study.thick + study.thin + found)
        time.sleep(5.0)  # past the quiet periods (1 s, 2 s) and a sweep
        assert len(jobs(node)) == 2 and len(readable(pacs)) == 4
        states = series_states(node)
        for ds in found:
            state, reason = states[str(ds.SeriesInstanceUID)]
            assert state == SeriesState.NOT_ROUTED
            assert reason == f"made by this node ({MODEL} 2.0.0): its own results are never routed"
        assert states[thin][0] == SeriesState.ROUTED
    finally:
        if node is not None:
            node.stop()
        stop_process(storescp)


def test_with_policy_record_a_better_series_after_delivery_sends_nothing_new(
    tmp_path: Path, study: ChestCtStudy
) -> None:
    pacs_port, pacs = free_port(), tmp_path / "pacs"
    storescp = start_storescp(pacs_port, pacs)
    node: Node | None = None
    try:
        node, port = start_node(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", pacs_port, "record")
        send(port, study.thick)
        results_at(pacs, 2)
        send(port, study.thin)
        thin = str(study.thin[0].SeriesInstanceUID)
        wait_until(lambda: series_states(node)[thin][0] == SeriesState.NOT_ROUTED, 30, "decision")
        assert series_states(node)[thin][1].startswith(f"would now be chosen for {MODEL} (job ")
        assert "late-data" in event_kinds(node)
        time.sleep(3.0)  # a job would have run and been sent by now
        assert [j.state for j in jobs(node)] == [JobState.DONE] and len(readable(pacs)) == 2
    finally:
        if node is not None:
            node.stop()
        stop_process(storescp)
