"""The radiograph classifiers through the node over real sockets (issue 3, 1.3 and 1.9).

dcmtk's storescu sends three generated radiographs, each its own study: a PA chest with
a pleural effusion (MONOCHROME1, as many CR readers store it), a normal PA chest, and a
forearm with a fracture. The test PACS (dcmtk storescp) gets, for each abnormal one, a
FRACTIONAL saliency SEG and an SR whose finding is Present with its probability and the
outline of the region that drove it; for the normal chest, a findings SR with "Abnormal:
Absent". Everything passes dciodvfy; OHIF's libraries show the SR's outline on the
radiograph, and the saliency points at the effusion and at the fracture."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_ai_node.testing.images import radiograph_to_dataset
from dicom_ai_node.testing.phantoms.chest_xr import ChestRadiograph, chest_radiograph
from dicom_ai_node.testing.phantoms.extremity_xr import ExtremityRadiograph, extremity_radiograph
from dicom_ai_node.testing.series import write_series

from ..conftest import dcmtk_env, free_port, require_exe, write_node_config
from ..tools import dciodvfy_errors, viewer_check
from .test_end_to_end import wait_for_results

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Held-out seeds (train.py trains on seed 0 and scores from 10 000).
SEED = 20_300
#: A held-out forearm whose Grad-CAM lands on the fracture: at this size it does so for 6
#: of the 9 fractures found among seeds 20 310-20 319 (the model card's 64 %, the gate's
#: 8 of 12); this test checks the plumbing (map and outline on the image's own pixels).
FRACTURE_SEED = 20_312
SIZE = 1536


def _codes(sr: Dataset) -> dict[str, object]:
    """Finding, evaluation, probability and geometry of the SR's one group."""
    [group] = sr.ContentSequence[-1].ContentSequence
    out: dict[str, object] = {}
    for item in group.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CODE":
            out[name] = item.ConceptCodeSequence[0].CodeMeaning
        elif item.ValueType == "NUM":
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "SCOORD":
            out["outline"] = np.asarray(item.GraphicData, float).reshape(-1, 2)
    return out


def _studies() -> tuple[ChestRadiograph, Dataset, Dataset]:
    rng = np.random.default_rng(SEED)
    abnormal = chest_radiograph(SIZE, rng, "effusion")
    normal = chest_radiograph(SIZE, rng)
    return (
        abnormal,
        radiograph_to_dataset(abnormal, seed=SEED, monochrome1=True),
        radiograph_to_dataset(normal, seed=SEED + 1),
    )


def _fracture() -> tuple[ExtremityRadiograph, Dataset]:
    xr = extremity_radiograph(SIZE, np.random.default_rng(FRACTURE_SEED), fracture=True)
    ds = radiograph_to_dataset(
        xr, seed=FRACTURE_SEED, body_part_examined="FOREARM", view_position="AP"
    )
    return xr, ds


def _on(mask: np.ndarray, seg: Dataset, sr: Dataset, finding: str) -> None:
    """The saliency's maximum is on ``mask`` and the SR's outline overlaps it."""
    group = _codes(sr)
    assert group[finding] == "Present" and float(group["Probability"]) >= 0.5  # type: ignore[arg-type]
    heat = seg.pixel_array.astype(float)
    r, c = np.unravel_index(int(heat.argmax()), heat.shape)
    reach = SIZE // 24
    assert mask[max(0, r - reach) : r + reach, max(0, c - reach) : c + reach].any()
    outline = group["outline"]
    assert isinstance(outline, np.ndarray)
    (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
    rows, cols = np.nonzero(mask)
    assert x0 < cols.max() and x1 > cols.min() and y0 < rows.max() and y1 > rows.min()


def test_two_radiographs_get_saliency_seg_sr_and_a_findings_sr(
    tmp_path: Path, storescp: tuple[int, Path], node_factory: type
) -> None:
    pacs_port, pacs_dir = storescp
    port = free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", pacs_port)]
    )
    node = node_factory(config, port)
    node.start()
    truth, abnormal, normal = _studies()
    broken, forearm = _fracture()
    folder = tmp_path / "send"
    write_series([abnormal], folder / "abnormal")
    write_series([normal], folder / "normal")
    write_series([forearm], folder / "forearm")
    storescu = require_exe("storescu")
    for study in ("abnormal", "normal", "forearm"):
        subprocess.run(
            [
                storescu,
                "-aet",
                "PACS",
                "-aec",
                "AI_NODE",
                "+sd",
                "127.0.0.1",
                str(port),
                str(folder / study),
            ],
            check=True,
            capture_output=True,
            timeout=60,
            env=dcmtk_env(),
        )
    results = wait_for_results(pacs_dir, 5)
    by_study: dict[str, list[Dataset]] = {}
    for ds in results:
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    found = by_study[str(abnormal.StudyInstanceUID)]
    [seg] = [r for r in found if r.Modality == "SEG"]
    [sr] = [r for r in found if r.Modality == "SR"]
    assert seg.SegmentationType == "FRACTIONAL" and "cxr-abnormal" in seg.SeriesDescription
    _on(truth.mask, seg, sr, "Abnormal")
    fracture = by_study[str(forearm.StudyInstanceUID)]
    [fracture_seg] = [r for r in fracture if r.Modality == "SEG"]
    [fracture_sr] = [r for r in fracture if r.Modality == "SR"]
    assert "xr-fracture" in fracture_sr.SeriesDescription
    _on(broken.mask, fracture_seg, fracture_sr, "Fracture")
    [findings] = by_study[str(normal.StudyInstanceUID)]
    assert findings.SeriesDescription.endswith("findings SR")
    group = _codes(findings)
    assert group["Abnormal"] == "Absent" and float(group["Probability"]) < 0.5  # type: ignore[arg-type]
    for path in sorted(pacs_dir.iterdir()):
        assert dciodvfy_errors(path) == [], path.name
    source = tmp_path / "source"
    write_series([abnormal], source)
    paths = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in pacs_dir.iterdir()}
    shown = viewer_check(paths[sr.SOPInstanceUID], paths[seg.SOPInstanceUID], source)
    assert shown["sr"]["problems"] == [] and shown["sr"]["displayedGroups"] == 1
    assert shown["seg"]["segmentationType"] == "FRACTIONAL"
    assert shown["seg"]["segments"] == [{"label": "Abnormal saliency", "type": "Saliency"}]
    assert "PHANTOM" not in node.log()
