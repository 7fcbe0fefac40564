"""A built-in model's results through the node's own runner and encoders, then the
independent checks every result must pass (issue 3): dciodvfy with no errors, and OHIF
3.13's libraries loading the SEG on its source series and showing every SR group."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.infer.manifest import ModelManifest
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.series import write_series

from ..tools import dciodvfy_errors, viewer_check

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ModelRun:
    """One series through one built-in model: its manifest, the ordered source images
    and the output."""

    manifest: ModelManifest
    ordered: list[Dataset]
    output: ModelOutput


def run_model(name: str, datasets: list[Dataset]) -> ModelRun:
    """Load the series as the pipeline does (no quality issue allowed) and run the model."""
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    runner = registry.runner(name)
    volume, ordered, issues = load_volume(datasets)
    assert volume is not None and issues == ()
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    return ModelRun(registry.manifests[name], list(ordered), output)


def validate_and_view(run: ModelRun, tmp_path: Path) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Encode the SEG and the measurement SR, check both with dciodvfy (0 errors) and in
    OHIF's libraries (SEG loads without problems, every SR group displayed); returns the
    SEG, the SR and what the viewer showed."""
    results = encode_results(
        run.ordered,
        run.output,
        run.manifest.algorithm(device_uid(run.manifest.name, run.manifest.version)),
        f"{run.manifest.name}-interop",
        content_datetime=dt.datetime(2026, 1, 2, 3, 4, 5),
    )
    [seg] = [ds for ds in results if ds.Modality == "SEG"]
    [sr] = [ds for ds in results if ds.Modality == "SR" and "findings" not in ds.SeriesDescription]
    write_series(run.ordered, tmp_path / "source")
    paths = {}
    for name, ds in (("seg", seg), ("sr", sr)):
        paths[name] = tmp_path / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
        assert dciodvfy_errors(paths[name]) == [], name
    shown = viewer_check(paths["sr"], paths["seg"], tmp_path / "source")
    assert shown["seg"]["problems"] == [] and shown["seg"]["ohifLoads"] is True
    assert shown["sr"]["problems"] == []
    assert shown["sr"]["displayedGroups"] == len(run.output.labels)
    for group in shown["sr"]["groups"]:
        for item in group["labels"]:
            if item["label"] == "Volume":  # OHIF 3.13 writes a NUM's value to 0.01, then its unit
                text, unit = item["value"].split(" ")
                assert unit == item["unit"] == "ml", item
                assert float(text) == pytest.approx(item["numericValue"], abs=0.005), item
    return seg, sr, shown
