"""Built-in model cxr-abnormal: quality gate through the node's own runner on freshly
generated radiographs, manifest and card, routing of chest radiographs to it and to
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
from dicom_ai_node.testing.phantoms.chest_xr import FINDINGS, chest_radiograph
from dicom_ai_node.testing.series import make_ct_series

from ..model_gate import classifier_gate, load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "cxr_abnormal"
# held-out seeds: training uses 0 and train.py's own scoring 10 000
GATE_SEED = 20_000
GATE_IMAGES = 160


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _runner() -> ImageClassifier:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    runner = registry.runner("cxr-abnormal")
    assert isinstance(runner, ImageClassifier)
    return runner


def _example(k: int, rng: np.random.Generator) -> tuple[np.ndarray, bool, np.ndarray]:
    finding = FINDINGS[(k // 2) % len(FINDINGS)] if k % 2 else ""
    ph = chest_radiograph(int(rng.choice([256, 384])), rng, finding)
    return ph.image, ph.abnormal, ph.mask


def test_quality_gate_on_fresh_radiographs() -> None:
    """AUC on images the model never saw, scored through the node's runner (its scaling,
    its threshold), and the saliency pointing at the finding on abnormal calls."""
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    gate = classifier_gate(_runner(), _example, GATE_IMAGES, GATE_SEED)
    print(f"gate: AUC {gate.auc:.3f} on {GATE_IMAGES} images, pointing {gate.pointed}/{gate.tried}")
    assert gate.auc >= float(acceptance["auc_min"]), gate
    assert gate.tried >= 6, gate
    assert gate.pointed / gate.tried >= float(acceptance["pointing_game_min"]), gate


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["task"]) == ("cxr-abnormal", "classification")
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [(1, "263654008")]
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


def test_a_frontal_chest_radiograph_routes_to_it_and_nothing_else() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    rng = np.random.default_rng(3)
    pa = radiograph_to_dataset(chest_radiograph(64, rng), seed=1, monochrome1=True)
    lateral = radiograph_to_dataset(chest_radiograph(64, rng), seed=2, view_position="LL")
    _, chest_ct = make_ct_series(30, 32, 32, seed=6)
    routing = route_study(
        [series_of([pa]), series_of([lateral]), series_of(chest_ct)], rules, registry.specs
    )
    assert routing.for_series(pa.SeriesInstanceUID).models == ("cxr-abnormal",)
    assert routing.for_series(lateral.SeriesInstanceUID).models == ()
    assert routing.for_series(chest_ct[0].SeriesInstanceUID).models == ("ct-chest-lungs",)


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "cxr"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 192, 192)))
    assert y.shape == (2, 1) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True and 0.0 <= metrics["held_out"]["auc"] <= 1.0
