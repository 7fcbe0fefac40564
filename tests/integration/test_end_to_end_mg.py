"""The mammography model through the node over real sockets (issue 3, 1.4).

dcmtk's storescu sends a generated for-presentation mammogram with microcalcification
clusters. The test PACS (dcmtk storescp) gets a SEG (the calcifications, and each
cluster's extent) and an SR with one group per cluster, outlined on the image, with its
number of calcifications, and the image's total. Everything passes dciodvfy with 0
errors; OHIF's libraries show every SR group on the mammogram (the SEG of an image
without a Frame of Reference is one their adapters cannot load, as for ultrasound)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_ai_node.geometry import components
from dicom_ai_node.testing.images import mammogram_to_dataset
from dicom_ai_node.testing.phantoms.mammography import CALCIFICATION, mammogram
from dicom_ai_node.testing.series import write_series

from ..conftest import dcmtk_env, free_port, require_exe, write_node_config
from ..tools import dciodvfy_errors, viewer_check
from .test_end_to_end import wait_for_results

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A held-out image (train.py trains on 0..299 and scores from 10 000).
SEED = 20_800


def _groups(sr: Dataset) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for group in sr.ContentSequence[-1].ContentSequence:
        name, nums = "", {}
        for item in group.ContentSequence:
            concept = item.ConceptNameCodeSequence[0].CodeMeaning
            if concept == "Tracking Identifier":
                name = item.TextValue
            elif item.ValueType == "NUM":
                nums[concept] = float(item.MeasuredValueSequence[0].NumericValue)
        out[name] = nums
    return out


def test_a_mammogram_gets_its_calcification_clusters_counted(
    tmp_path: Path, storescp: tuple[int, Path], node_factory: type
) -> None:
    pacs_port, pacs_dir = storescp
    port = free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", pacs_port)]
    )
    node = node_factory(config, port)
    node.start()
    mg = mammogram(np.random.default_rng(SEED), clusters=2)
    ds = mammogram_to_dataset(mg, seed=SEED)
    write_series([ds], tmp_path / "send")
    storescu = [require_exe("storescu"), "-aet", "PACS", "-aec", "AI_NODE", "+sd", "127.0.0.1"]
    subprocess.run(
        [*storescu, str(port), str(tmp_path / "send")],
        check=True,
        capture_output=True,
        timeout=120,
        env=dcmtk_env(),
    )
    results = wait_for_results(pacs_dir, 2)
    [seg] = [r for r in results if r.Modality == "SEG"]
    [sr] = [r for r in results if r.Modality == "SR"]
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels[0] == "Calcifications" and labels[1:] == [
        f"Calcification cluster {k}" for k in range(1, len(labels))
    ]
    groups = _groups(sr)
    clusters = {k: v for k, v in groups.items() if k.startswith("Calcification cluster")}
    # drawn specks can touch: the truth is the connected calcifications each cluster holds
    found = components((mg.labels == CALCIFICATION)[None])
    truth = sorted(
        sum(
            any(
                box[1].start <= r < box[1].stop
                and box[2].start <= c < box[2].stop
                and local[0, int(r) - box[1].start, int(c) - box[2].start]
                for r, c in cluster.specks
            )
            for box, local in found
        )
        for cluster in mg.clusters
    )
    assert len(clusters) == len(truth) == 2, (groups, truth)
    counts = sorted(g["Number of calcifications"] for g in clusters.values())
    assert all(abs(c - t) <= max(2, 0.3 * t) for c, t in zip(counts, truth, strict=True)), (
        counts,
        truth,
    )
    assert all(g["Long Axis"] > 0 for g in clusters.values())
    for path in sorted(pacs_dir.iterdir()):
        assert dciodvfy_errors(path) == [], path.name
    paths = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in pacs_dir.iterdir()}
    write_series([ds], tmp_path / "source")
    shown = viewer_check(paths[sr.SOPInstanceUID], paths[seg.SOPInstanceUID], tmp_path / "source")
    problems = [(g["trackingIdentifier"], g["problems"]) for g in shown["sr"]["groups"]]
    assert shown["sr"]["problems"] == [] and shown["sr"]["displayedGroups"] == len(groups), problems
    assert shown["seg"]["ohifLoads"] is False  # no Plane Orientation without a Frame of Reference
    assert "PHANTOM" not in node.log()
