"""The node behind a real PACS: Orthanc forwards a multi-series study with the shipped recipe
(docs/recipes/orthanc-autoforward.lua, loaded as it is), the node's results come back into
Orthanc, and each forward order ends with exactly one result set per (study, model), built
on the best series, valid (dciodvfy) and listed by Orthanc's QIDO-RS.

Orders: thick before thin 1 s and 5 s apart, thin before thick, and one series at a time
behind a naive rule that forwards the whole study, the node's results included, each time
it is stable. The node runs as ``dicom-ai-node serve`` in its own process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from dicom_ai_node.store.db import Database
from dicom_ai_node.store.tables import Delivery, Job, Series, Study

from ..conftest import NodeProcess, free_port, write_node_config
from ..orthanc import RECIPE, Orthanc, OrthancFactory, recipe_user_metadata, wait_until
from ..studies import ChestCtStudy, chest_ct_study
from ..tools import dciodvfy_errors

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MODEL = "ct-chest-lungs"
SEG, SR = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"
#: Longer than a gap between series (5 s) plus Orthanc's StableAge (2 s) and the time it
#: takes to forward a series: the node decides once the study is complete.
STUDY_QUIET_S = 12.0
#: A rule that forwards everything it has, every time the study is stable (it loops
#: without the node's protection: our results arriving make the study change again).
NAIVE_RULE = """
function OnStableStudy(studyId, tags, metadata)
  print('naive-forward: study ' .. studyId)
  RestApiPost('/modalities/ai-node/store',
              DumpJson({ Resources = { studyId }, Synchronous = true }, true))
end
"""


@pytest.fixture(scope="module")
def study() -> ChestCtStudy:
    return chest_ct_study(seed=1405, slices=48, size=192)


def behind_orthanc(
    tmp_path: Path, orthanc_factory: OrthancFactory, node_factory: type, rule: Path
) -> tuple[Orthanc, NodeProcess]:
    """Orthanc with ``rule`` in front of a node whose AE table sends results back to it."""
    orthanc_port, node_port = free_port(), free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'node.db'}", node_port, [("ORTHANC", orthanc_port)], 1.0
    )
    text = config.read_text()
    config.write_text(
        text.replace("[assemble]\n", f"[assemble]\nstudy_quiet_period_s = {STUDY_QUIET_S}\n", 1)
    )
    node: NodeProcess = node_factory(config, node_port)
    node.start()
    pacs = orthanc_factory.start(
        dicom_port=orthanc_port,
        modalities={"ai-node": ("AI_NODE", "127.0.0.1", node_port)},
        lua_scripts=[rule],
        user_metadata=recipe_user_metadata(),
    )
    return pacs, node


def one_result_set(pacs: Orthanc, study: ChestCtStudy, folder: Path) -> None:
    """Exactly one SEG and one SR of the model in the study, built on the thin series,
    valid, and listed by QIDO-RS."""
    uid = study.study_instance_uid
    ours = [s for s in pacs.series(uid) if MODEL in s.series_description]
    assert sorted((s.modality, s.series_description) for s in ours) == [
        ("SEG", f"AI {MODEL} 2.0.0 SEG"),
        ("SR", f"AI {MODEL} 2.0.0 SR"),
    ], pacs.tail()
    thin = str(study.thin[0].SeriesInstanceUID)
    for series in ours:
        (path,) = pacs.download_series(series.orthanc_id, folder / series.modality)
        assert dciodvfy_errors(path) == [], path
        ds = dcmread(path)
        if ds.Modality == "SEG":
            built_on = {str(item.SeriesInstanceUID) for item in ds.ReferencedSeriesSequence}
        else:
            evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
            built_on = {str(item.SeriesInstanceUID) for item in evidence.ReferencedSeriesSequence}
        assert built_on == {thin}, (ds.Modality, built_on)
    listed = {
        item["0020000E"]["Value"][0]: item["00080060"]["Value"][0] for item in pacs.qido_series(uid)
    }
    assert {s.series_instance_uid: s.modality for s in ours}.items() <= listed.items()
    assert len(listed) == len(study.series) + 2


def wait_for_results(pacs: Orthanc, study: ChestCtStudy, timeout_s: float = 120.0) -> None:
    """Wait (bounded) until the model's SEG and SR are in Orthanc."""
    uid = study.study_instance_uid

    def probe() -> bool | None:
        found = {s.modality for s in pacs.series(uid) if MODEL in s.series_description}
        return True if found >= {"SEG", "SR"} else None

    wait_until("the node's SEG and SR in Orthanc", probe, timeout_s, pacs.tail)


def jobs_report(node: NodeProcess) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dicom_ai_node.cli", "-c", str(node.config), "jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def settled(node: NodeProcess, study: ChestCtStudy, series: int, timeout_s: float = 90.0) -> None:
    """Wait (bounded) until the node holds ``series`` series of the study, every one of
    them decided, and has no job to run and nothing to send: no more results can come.

    Reads the node's index (SQLite in WAL mode: a reader beside the node is safe).
    """
    db = Database(f"sqlite:///{node.config.parent / 'node.db'}")

    def probe() -> bool | None:
        with db.session() as session:
            study_pk = session.scalar(
                select(Study.pk).where(Study.study_instance_uid == study.study_instance_uid)
            )
            states = list(session.scalars(select(Series.state).where(Series.study_fk == study_pk)))
            busy = session.scalar(
                select(func.count()).select_from(Job).where(Job.state.in_(["queued", "running"]))
            )
            sending = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state == "pending")
            )
        done = len(states) == series and set(states) <= {"routed", "not_routed"}
        return True if done and not busy and not sending else None

    try:
        wait_until("the node settled", probe, timeout_s, node.log)
    finally:
        db.dispose()


@pytest.mark.parametrize("gap_s", [1.0, 5.0])
def test_thick_before_thin(
    tmp_path: Path,
    orthanc_factory: OrthancFactory,
    node_factory: type,
    study: ChestCtStudy,
    gap_s: float,
) -> None:
    pacs, node = behind_orthanc(tmp_path, orthanc_factory, node_factory, RECIPE)
    pacs.send(study.topogram)
    pacs.send(study.thick)
    time.sleep(gap_s)
    pacs.send(study.thin)
    wait_for_results(pacs, study)
    settled(node, study, series=3)
    one_result_set(pacs, study, tmp_path / "check")
    report = jobs_report(node)
    assert report.count(f"{MODEL} 2.0.0: done") == 1, report
    assert "preferred over" in report and "thinner slices (2.5 mm vs 5 mm)" in report


def test_thin_before_thick(
    tmp_path: Path, orthanc_factory: OrthancFactory, node_factory: type, study: ChestCtStudy
) -> None:
    pacs, node = behind_orthanc(tmp_path, orthanc_factory, node_factory, RECIPE)
    pacs.send(study.thin)
    time.sleep(3.0)
    pacs.send(study.thick)
    pacs.send(study.topogram)
    wait_for_results(pacs, study)
    # the recipe skips the node's own results when they make the study stable again
    pacs.wait_for_lua("skip series .*: made by the node", count=2)
    settled(node, study, series=3)
    one_result_set(pacs, study, tmp_path / "check")


def test_one_series_at_a_time_behind_a_naive_rule(
    tmp_path: Path, orthanc_factory: OrthancFactory, node_factory: type, study: ChestCtStudy
) -> None:
    rule = tmp_path / "naive.lua"
    rule.write_text(NAIVE_RULE)
    pacs, node = behind_orthanc(tmp_path, orthanc_factory, node_factory, rule)
    for n, series in enumerate((study.topogram, study.thick, study.thin), start=1):
        pacs.send(series)  # each series once the previous one was forwarded
        pacs.wait_for_lua("naive-forward: study", count=n)
    wait_for_results(pacs, study)
    # the results made the study stable again: the naive rule sends it all back
    pacs.wait_for_lua("naive-forward: study", count=4)
    settled(node, study, series=5)  # its SEG and SR series too, never routed
    one_result_set(pacs, study, tmp_path / "check")
    report = jobs_report(node)
    assert report.count(f"{MODEL} 2.0.0: done") == 1, report
    own = [line for line in report.splitlines() if line.startswith("  series ")]
    own = [line for line in own if line.endswith("its own results are never routed")]
    assert len(own) == 2, report  # its SEG and its SR series
