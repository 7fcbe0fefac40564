"""The built-in body-region model: its quality gate on freshly generated series, its
manifest and card, its TorchScript contract, and the smoke run of its training script."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.domain import BodyPart
from dicom_ai_node.infer.bodyregion import BodyRegionModel, pick_slices
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.testing.phantoms.chest_ct import chest_ct_phantom
from dicom_ai_node.testing.phantoms.region_ct import REGIONS, region_ct

from ..model_gate import train_smoke

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "body_region"
GATE_SEED_BASE = 20_000  # neither training (0..) nor the card's held-out set (10 000..)


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _model(folder: Path = MODEL_DIR) -> BodyRegionModel:
    return BodyRegionModel(load_manifest(folder / "model.toml"), Device("cpu"))


def _classify(model: BodyRegionModel, hu: np.ndarray) -> tuple[BodyPart, float]:
    return model.classify([hu[i].astype(np.float32) for i in pick_slices(hu.shape[0])])


def test_quality_gate_on_fresh_generated_series() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    model = _model()
    right = total = 0
    misses = []
    for index, region in enumerate(REGIONS):
        for k in range(8):
            seed = GATE_SEED_BASE + 100 * index + k
            hu = region_ct(region, 24, 256 if k % 2 else 512, seed=seed)
            found, _ = _classify(model, hu)
            right += found == region
            total += 1
            if found != region:
                misses.append((region.value, seed, found.value))
    for k in range(3):
        ph = chest_ct_phantom(30, 256, 256, (5.0, 1.4, 1.4), seed=GATE_SEED_BASE + 900 + k)
        found, _ = _classify(model, ph.hu)
        right += found == BodyPart.CHEST
        total += 1
    assert right / total >= float(acceptance["series_accuracy_min"]), misses


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["task"]) == ("body-region", "body-region")
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [lab["name"].upper() for lab in manifest["labels"]] == [r.value for r in REGIONS]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"series accuracy >= {acceptance['series_accuracy_min']}" in card
    assert "Not for clinical use" in card


def test_the_model_reads_ct_only_and_says_how_sure_it_is() -> None:
    model = _model()
    assert model.accepts("CT") and model.accepts("ct")
    assert not model.accepts("MR") and not model.accepts("CR")
    region, confidence = _classify(model, region_ct(BodyPart.HEAD, 12, 256, seed=GATE_SEED_BASE))
    assert region == BodyPart.HEAD and 0.5 < confidence <= 1.0


@pytest.mark.slow
def test_smoke_training_writes_a_model_the_node_loads(tmp_path: Path) -> None:
    out = tmp_path / "body_region"
    train_smoke(MODEL_DIR, out)
    (out / "model.toml").write_text((MODEL_DIR / "model.toml").read_text())
    region, confidence = _classify(_model(out), region_ct(BodyPart.CHEST, 12, 128, seed=7))
    assert region in REGIONS and 0.0 < confidence <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True and 0.0 <= metrics["held_out"]["series_accuracy"] <= 1.0
