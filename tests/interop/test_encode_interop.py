"""Interop tests of the encode stage: dciodvfy validates, OHIF 3.13's libraries load."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import (
    AlgorithmInfo,
    Code,
    Measurement,
    ModelOutput,
    OutputLabel,
    QualityIssue,
)
from dicom_ai_node.encode import device_uid, encode_results, tracking_uid
from dicom_ai_node.infer.findings.measure import ML, MM3_PER_ML, VOLUME, region_measurements
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.series import make_ct_series, write_series

from ..tools import dciodvfy_errors, viewer_check

pytestmark = pytest.mark.interop

ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
LABELS = (  # as in models/ct-chest-lungs/model.toml
    OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), (220, 120, 80)),
    OutputLabel(2, "Left lung", ANATOMY, Code("44029006", "SCT", "Left lung"), (80, 150, 220)),
)
ALGORITHM = AlgorithmInfo(
    name="ct-chest-lungs",
    version="1.0.0",
    family=Code("123110", "DCM", "Artificial Intelligence"),
    device_uid=device_uid("ct-chest-lungs", "1.0.0"),
)
JOB = "interop-job"


def _encode(datasets: list[Dataset], output: ModelOutput, folder: Path) -> dict[str, Path]:
    """The node's SEG, SR and findings SR of ``output``, written under ``folder``."""
    results = encode_results(
        datasets, output, ALGORITHM, JOB, content_datetime=dt.datetime(2026, 1, 2, 3, 4, 5)
    )
    write_series(datasets, folder / "source")
    paths = {"source": folder / "source"}
    for name, ds in zip(("seg", "sr", "findings"), results, strict=True):
        paths[name] = folder / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    return paths


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    phantom, datasets = make_ct_series(30, 128, 128, spacing_mm=(5.0, 2.8, 2.8))
    volume, _, _ = load_volume(datasets)
    assert volume is not None
    measurements = tuple(  # the node's own: volumes in ml
        m
        for label in LABELS
        for m in region_measurements(
            label.value, phantom.labels == label.value, volume.voxels, volume, ["volume"]
        )
    )
    output = ModelOutput(
        labels=LABELS,
        label_map=phantom.labels,
        measurements=measurements,
        quality_issues=(QualityIssue("slice_thickness", "5 mm slices", blocking=False),),
    )
    paths = _encode(datasets, output, tmp_path_factory.mktemp("encoded"))
    return {"phantom": phantom, "datasets": datasets, "output": output, **paths}


@pytest.mark.parametrize("name", ["seg", "sr", "findings"])
def test_dciodvfy_finds_no_errors(encoded: dict[str, Path], name: str) -> None:
    assert dciodvfy_errors(encoded[name]) == []


def test_dciodvfy_helper_reports_errors(encoded: dict[str, Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(encoded["sr"])
    del ds.CompletionFlag  # Type 1 in the SR Document General module
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    assert any(
        "CompletionFlag" in line or "Completion Flag" in line
        for line in dciodvfy_errors(tmp_path / "bad.dcm")
    )


def test_ohif_shows_each_lung_group_with_geometry(encoded: dict[str, Any]) -> None:
    result = viewer_check(encoded["sr"], None, encoded["source"])
    assert result["versions"]["dcmjs"] == "0.52.0"
    assert result["versions"]["@cornerstonejs/adapters"] == "5.6.8"
    sr = result["sr"]
    assert sr["isImagingMeasurementReport"] and sr["templateIdentifier"] == "1500"
    assert sr["problems"] == []
    assert sr["displayedGroups"] == 2
    phantom: ChestPhantom = encoded["phantom"]
    output: ModelOutput = encoded["output"]
    for group, label, measurement in zip(sr["groups"], LABELS, output.measurements, strict=True):
        assert group["problems"] == []
        assert group["trackingIdentifier"] == label.name
        assert group["trackingUniqueIdentifier"] == tracking_uid(JOB, label.value)
        assert (group["valueType"], group["graphicType"]) == ("SCOORD", "POLYLINE")
        assert group["displayTool"] == "DICOMSRDisplay"
        assert group["closed"] and group["pointCount"] >= 5
        assert group["referencesLoadedImage"]
        assert group["findingSite"] == label.type.meaning
        volume = next(item for item in group["labels"] if item["label"] == "Volume")
        voxels = int(np.count_nonzero(phantom.labels == label.value))
        assert measurement.value == voxels * float(np.prod(phantom.spacing_mm)) / 1000
        assert volume["unit"] == "ml" and volume["value"] == f"{measurement.value:.2f} ml"
        # drawn on the slice where the label is largest, at that slice's z
        k = int(np.argmax((phantom.labels == label.value).sum(axis=(1, 2))))
        z = k * phantom.spacing_mm[0]
        assert group["worldZ"] == pytest.approx([z, z])


def test_findings_without_geometry_stay_out_of_the_measurement_sr(encoded: dict[str, Any]) -> None:
    findings = viewer_check(encoded["findings"], None, encoded["source"])["sr"]
    assert [g["hasGeometry"] for g in findings["groups"]] == [False]
    assert findings["groups"][0]["trackingIdentifier"] == "slice_thickness: 5 mm slices"
    assert findings["problems"]  # why it must be a separate object


def test_ohif_seg_labelmap_matches_the_label_map(encoded: dict[str, Any]) -> None:
    seg = viewer_check(None, encoded["seg"], encoded["source"])["seg"]
    assert seg["segmentationType"] == "BINARY"
    assert not seg["overlappingSegments"]
    assert seg["problems"] == []
    phantom: ChestPhantom = encoded["phantom"]
    assert sorted(seg["segments"]) == ["1", "2"]
    for label in LABELS:
        segment = seg["segments"][str(label.value)]
        mask = phantom.labels == label.value
        assert segment["label"] == label.name
        assert segment["type"] == label.type.meaning
        assert segment["algorithmType"] == "AUTOMATIC"
        assert segment["voxels"] == int(np.count_nonzero(mask))
        assert segment["slices"] == int(np.count_nonzero(mask.any(axis=(1, 2))))
        assert np.allclose(segment["rgb"], label.color_rgb, atol=1)


def test_ohif_shows_an_organ_and_a_small_nodule_in_ml(
    encoded: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 14: a 2220704.58 mm3 lung was shown as "2220704.58 mm3"; now "2220.70 ml".
    A 65 mm3 nodule shows as "0.07 ml" (OHIF 3.13 writes every NUM to 0.01); the SR
    keeps both values exact."""
    lung, nodule = 2220704.58 / MM3_PER_ML, 65.0 / MM3_PER_ML
    output: ModelOutput = encoded["output"]
    measurements = (Measurement(1, VOLUME, lung, ML), Measurement(2, VOLUME, nodule, ML))
    paths = _encode(encoded["datasets"], replace(output, measurements=measurements), tmp_path)
    sr = viewer_check(paths["sr"], None, paths["source"])["sr"]
    shown = [
        (group["trackingIdentifier"], item["value"], item["numericValue"])
        for group in sr["groups"]
        for item in group["labels"]
        if item["label"] == "Volume"
    ]
    assert shown == [
        ("Right lung", "2220.70 ml", pytest.approx(lung, rel=1e-14)),
        ("Left lung", "0.07 ml", pytest.approx(nodule, rel=1e-14)),
    ]
