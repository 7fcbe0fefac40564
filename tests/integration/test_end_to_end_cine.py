"""The cine CNN+RNN model through the node over real sockets (issue 3, 1.11).

dcmtk's storescu sends a generated short-axis cine stack (4 levels x 20 phases, MR Image
Storage, Trigger Time per phase). The test PACS (dcmtk storescp) gets two SEGs in one
series, end-diastole (cavity and myocardium at every level) and end-systole (cavity),
because a Segmentation cannot repeat a plane position, and one SR with the end-diastolic
and end-systolic volumes and the ejection fraction, which is checked against the
phantom's truth. Everything passes dciodvfy with 0 errors; OHIF's libraries load the
end-diastolic SEG on its images and show the SR's groups."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_ai_node.testing.phantoms.cine_mr import cine_phantom
from dicom_ai_node.testing.series import cine_to_datasets, write_series

from ..conftest import dcmtk_env, free_port, require_exe, write_node_config
from ..tools import dciodvfy_errors, viewer_check
from .test_end_to_end import wait_for_results

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A held-out seed (train.py trains on 0..119 and scores from 10 000).
SEED = 20_600
PHASES = 20


def _nums(sr: Dataset) -> dict[tuple[str, str], float]:
    out = {}
    for group in sr.ContentSequence[-1].ContentSequence:
        name = ""
        for item in group.ContentSequence:
            if item.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier":
                name = item.TextValue
        for item in group.ContentSequence:
            if item.ValueType == "NUM":
                concept = item.ConceptNameCodeSequence[0].CodeMeaning
                out[(name, concept)] = float(item.MeasuredValueSequence[0].NumericValue)
    return out


def test_a_cine_stack_gets_end_diastole_end_systole_and_the_ejection_fraction(
    tmp_path: Path, storescp: tuple[int, Path], node_factory: type
) -> None:
    pacs_port, pacs_dir = storescp
    port = free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", pacs_port)]
    )
    node = node_factory(config, port)
    node.start()
    ph = cine_phantom(SEED, levels=4, phases=PHASES, size=128, ejection_fraction=0.35)
    series = cine_to_datasets(ph, seed=SEED)
    write_series(series, tmp_path / "send")
    storescu = [require_exe("storescu"), "-aet", "PACS", "-aec", "AI_NODE", "+sd", "127.0.0.1"]
    subprocess.run(
        [*storescu, str(port), str(tmp_path / "send")],
        check=True,
        capture_output=True,
        timeout=120,
        env=dcmtk_env(),
    )
    results = wait_for_results(pacs_dir, 3)
    segs = sorted((r for r in results if r.Modality == "SEG"), key=lambda r: r.InstanceNumber)
    [sr] = [r for r in results if r.Modality == "SR"]
    assert len(segs) == 2 and segs[0].SeriesInstanceUID == segs[1].SeriesInstanceUID
    assert [s.SegmentLabel for s in segs[0].SegmentSequence] == [
        "LV cavity, end-diastole",
        "LV myocardium, end-diastole",
    ]
    assert [s.SegmentLabel for s in segs[1].SegmentSequence] == ["LV cavity, end-systole"]
    diastole = {ds.SOPInstanceUID for ds in series[0::PHASES]}
    systole = {ds.SOPInstanceUID for ds in series[ph.end_systole :: PHASES]}
    for seg, wanted in zip(segs, (diastole, systole), strict=True):
        refs = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert {r.ReferencedSOPInstanceUID for r in refs} <= wanted
    nums = _nums(sr)
    ml = ph.cavity_ml()
    truth = 100 * (1 - ml[ph.end_systole] / ml[0])
    ef = nums[("LV cavity, end-systole", "Left ventricular Ejection fraction")]
    assert abs(ef - truth) <= 8.0, (ef, truth)
    assert nums[("LV cavity, end-diastole", "Volume")] == pytest.approx(ml[0], rel=0.15)
    for path in sorted(pacs_dir.iterdir()):
        assert dciodvfy_errors(path) == [], path.name
    paths = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in pacs_dir.iterdir()}
    write_series(series[0::PHASES], tmp_path / "diastole")
    shown = viewer_check(None, paths[segs[0].SOPInstanceUID], tmp_path / "diastole")["seg"]
    assert shown["problems"] == [] and shown["ohifLoads"] is True
    assert sum(s["voxels"] for s in shown["segments"].values()) == int(
        np.count_nonzero(segs[0].pixel_array)
    )
    both = [*series[0::PHASES], *series[ph.end_systole :: PHASES]]
    write_series(both, tmp_path / "phases")
    shown = viewer_check(paths[sr.SOPInstanceUID], None, tmp_path / "phases")["sr"]
    problems = [(g["trackingIdentifier"], g["problems"]) for g in shown["groups"]]
    assert shown["problems"] == [] and shown["displayedGroups"] == 3, problems
    assert "PHANTOM" not in node.log()
