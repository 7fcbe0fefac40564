"""The head CTA model's results, made by the node's own runner and encoders from a
generated angiogram with an aneurysm: dciodvfy reports no errors, and OHIF 3.13's
libraries load the SEG on the source series and show every SR group."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.cta_phantoms import cta_phantom
from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.phantoms import ChestPhantom
from dicom_ai_node.testing import phantom_to_datasets, write_series

from ..tools import dciodvfy_errors, viewer_check

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
#: A held-out angiogram with one aneurysm (train.py trains on 0..119).
SEED = 20_700


def test_cta_results_validate_and_load_in_the_viewer(tmp_path: Path) -> None:
    ph = cta_phantom(SEED, aneurysms=1)
    [aneurysm] = ph.aneurysms
    datasets = phantom_to_datasets(
        ChestPhantom(hu=ph.hu, labels=ph.labels, spacing_mm=ph.spacing_mm),
        seed=SEED,
        body_part_examined="HEAD",
        series_description="CTA COW 0.75mm",
        study_description="CT ANGIO HEAD",
    )
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    manifest = registry.manifests["cta-aneurysm"]
    runner = registry.runner("cta-aneurysm")
    volume, ordered, issues = load_volume(datasets)
    assert volume is not None and issues == ()
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    names = [label.name for label in output.labels]
    assert "Aneurysm 1" in names, names
    found = output.labels[names.index("Aneurysm 1")]
    [long_axis] = [
        m.value
        for m in output.measurements
        if m.label_value == found.value and m.concept.meaning == "Long Axis"
    ]
    assert long_axis == pytest.approx(aneurysm.diameter_mm, rel=0.5)
    results = encode_results(
        ordered,
        output,
        manifest.algorithm(device_uid(manifest.name, manifest.version)),
        "cta-interop",
        content_datetime=dt.datetime(2026, 1, 2, 3, 4, 5),
    )
    [seg] = [ds for ds in results if ds.Modality == "SEG"]
    [sr] = [ds for ds in results if ds.Modality == "SR" and "findings" not in ds.SeriesDescription]
    write_series(ordered, tmp_path / "source")
    paths = {}
    for name, ds in (("seg", seg), ("sr", sr)):
        paths[name] = tmp_path / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
        assert dciodvfy_errors(paths[name]) == [], name
    shown = viewer_check(paths["sr"], paths["seg"], tmp_path / "source")
    assert shown["seg"]["problems"] == [] and shown["seg"]["ohifLoads"] is True
    assert sum(s["voxels"] for s in shown["seg"]["segments"].values()) == int(
        np.count_nonzero(seg.pixel_array)
    )
    assert shown["sr"]["problems"] == []
    assert shown["sr"]["displayedGroups"] == len(output.labels)
