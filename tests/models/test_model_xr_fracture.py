"""Built-in model xr-fracture: quality gate through the node's own runner on freshly
generated radiographs, manifest and card, routing of limb radiographs to it and to
nothing else, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.tasks.classify import ImageClassifier
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.images import radiograph_to_dataset
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph
from dicom_ai_node.testing.phantoms.extremity_xr import extremity_radiograph

from ..model_gate import classifier_gate, load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "xr_fracture"
# held-out seeds: training uses 0 and train.py's own scoring 10 000
GATE_SEED = 20_000
GATE_IMAGES = 160


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _example(k: int, rng: np.random.Generator) -> tuple[np.ndarray, bool, np.ndarray]:
    xr = extremity_radiograph(int(rng.choice([256, 384])), rng, fracture=bool(k % 2))
    return xr.image, xr.fracture, xr.mask


def test_quality_gate_on_fresh_radiographs() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("xr-fracture")
    assert isinstance(runner, ImageClassifier)
    gate = classifier_gate(runner, _example, GATE_IMAGES, GATE_SEED)
    print(f"gate: AUC {gate.auc:.3f} on {GATE_IMAGES} images, pointing {gate.pointed}/{gate.tried}")
    assert gate.auc >= float(acceptance["auc_min"]), gate
    assert gate.tried >= 6, gate
    assert gate.pointed / gate.tried >= float(acceptance["pointing_game_min"]), gate


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["task"]) == ("xr-fracture", "classification")
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [(1, "72704001")]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    held_out = metrics["held_out"]
    assert isinstance(held_out, dict)
    assert held_out["auc"] >= acceptance["auc_min"]
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"AUC >= {acceptance['auc_min']}" in card
    assert "Not for clinical use" in card


def test_a_forearm_or_leg_radiograph_routes_to_it_and_nothing_else() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    rng = np.random.default_rng(4)
    forearm = radiograph_to_dataset(
        extremity_radiograph(64, rng, True), seed=11, body_part_examined="FOREARM"
    )
    ankle = radiograph_to_dataset(
        extremity_radiograph(64, rng), seed=12, body_part_examined="ANKLE", view_position="AP"
    )
    hand = radiograph_to_dataset(extremity_radiograph(64, rng), seed=13, body_part_examined="HAND")
    chest = radiograph_to_dataset(chest_radiograph(64, rng), seed=14)
    studies = [forearm, ankle, hand, chest]
    routing = route_study([series_of([ds]) for ds in studies], rules, registry.specs)
    models = {
        ds.BodyPartExamined: routing.for_series(ds.SeriesInstanceUID).models for ds in studies
    }
    assert models == {
        "FOREARM": ("xr-fracture",),
        "ANKLE": ("xr-fracture",),
        "HAND": (),  # small bones: not what it was trained on
        "CHEST": ("cxr-abnormal",),
    }


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "fracture"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 192, 192)))
    assert y.shape == (2, 1) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True and 0.0 <= metrics["held_out"]["auc"] <= 1.0
