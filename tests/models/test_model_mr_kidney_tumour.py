"""Built-in model mr-kidney-tumour: quality gate on freshly generated MR phantoms (scaled
as the node scales MR), manifest and card, routing of abdominal T2 and post-contrast MR to
it and of other series to nothing of it, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.tasks.segment import volume_percentiles
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.phantoms.brain_mr import BrainPhantom
from dicom_ai_node.testing.phantoms.kidney_ct import KIDNEY, TUMOUR
from dicom_ai_node.testing.phantoms.kidney_mr import kidney_mr_phantom
from dicom_ai_node.testing.series import mr_to_datasets

from ..model_gate import load_weights, segment_like_the_runner, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "mr_kidney_tumour"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEEDS = (20_000, 20_001, 20_002, 20_003)


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * np.logical_and(pred, truth).sum() / max(1, pred.sum() + truth.sum()))


def _scaled(image: np.ndarray) -> np.ndarray:
    """As the node scales MR (``preprocess.intensity = "percentile"``)."""
    low, high = volume_percentiles(image)
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def test_quality_gate_on_fresh_phantoms() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    module = load_weights(MODEL_DIR / "model.pt")
    kidneys, tumours, errors = [], [], []
    for seed in GATE_SEEDS:
        ph = kidney_mr_phantom(40, 256, (3.0, 1.4, 1.4), seed=seed, tumour=True)
        pred = segment_like_the_runner(module, _scaled(ph.hu.astype(np.float32)))
        kidneys.append(_dice(pred == KIDNEY, ph.labels == KIDNEY))
        tumours.append(_dice(pred == TUMOUR, ph.labels == TUMOUR))
        true_ml = ph.volume_ml(TUMOUR)
        found_ml = float(np.count_nonzero(pred == TUMOUR)) * float(np.prod(ph.spacing_mm)) / 1000
        errors.append(100 * (found_ml - true_ml) / true_ml)
    # the card's thresholds hold for the mean Dice and for the median volume error
    assert np.mean(kidneys) >= float(acceptance["kidney_dice_min"]), kidneys
    assert np.mean(tumours) >= float(acceptance["tumour_dice_min"]), tumours
    limit = float(acceptance["tumour_volume_error_max_abs_pct"])
    assert float(np.median(np.abs(errors))) <= limit, errors


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("mr-kidney-tumour", "torchscript")
    assert manifest["preprocess"]["intensity"] == "percentile"
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [
        (1, "64033007"),
        (2, "108369006"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"kidney Dice >= {acceptance['kidney_dice_min']}" in card
    assert f"tumour Dice >= {acceptance['tumour_dice_min']}" in card
    assert "Not for clinical use" in card


def test_abdominal_t2_and_post_contrast_mr_route_to_it_and_others_do_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    ph = kidney_mr_phantom(14, 32, (5.0, 8.0, 8.0), seed=5)
    volume = BrainPhantom(ph.hu.astype(np.float32), ph.labels, ph.spacing_mm, 0.0)

    def series(seed: int, part: str, description: str) -> list:  # type: ignore[type-arg]
        return mr_to_datasets(
            volume, seed=seed, body_part_examined=part, series_description=description
        )

    t2 = series(1, "KIDNEY", "T2 HASTE AX")
    post = series(2, "ABDOMEN", "T1 VIBE AX POST GD")
    dwi = series(3, "ABDOMEN", "DWI b800")
    coronal = series(4, "ABDOMEN", "T2 HASTE COR")
    brain = series(5, "HEAD", "T2 TSE AX")
    studies = [t2, post, dwi, coronal, brain]
    routing = route_study([series_of(s) for s in studies], rules, registry.specs)
    models = [routing.for_series(s[0].SeriesInstanceUID).models for s in studies]
    assert models == [("mr-liver-lesion", "mr-kidney-tumour"), ("mr-kidney-tumour",), (), (), ()]


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "kidney"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 128, 128)))
    assert y.shape == (2, 3, 128, 128) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
