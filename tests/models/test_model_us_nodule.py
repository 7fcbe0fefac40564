"""Built-in model us-nodule: quality gate through the node's own runner and post-processing
on freshly generated ultrasound images (thyroid Dice, nodule sensitivity, false positives,
long-axis error), manifest and card, routing of thyroid and breast ultrasound to it and of
other ultrasound to nothing, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import caliper_axes_mm, components
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.images import ultrasound_to_dataset
from dicom_ai_node.testing.phantoms.ultrasound import GLAND, NODULE, ultrasound_image
from dicom_ai_node.testing.series import make_ct_series

from ..model_gate import load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "us_nodule"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEED = 20_000
GATE_IMAGES = 24
#: Nodules this long or longer count for sensitivity (as in train.py and the card).
COUNTED_MM = 5.0


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def _masks(mask: np.ndarray) -> list[np.ndarray]:
    out = []
    for box, local in components(mask[None]):
        full = np.zeros(mask.shape, bool)
        full[box[1:]] = local[0]
        out.append(full)
    return out


def test_quality_gate_on_fresh_images() -> None:
    """Each image goes through the runner (8-bit scaling, resize, argmax) and the node's
    post-processing (one label per nodule, the area rule, the measurements), as a study
    would; every reported nodule is matched to the truth by Dice >= 0.4."""
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("us-nodule")
    glands, errors = [], []
    counted = found = false_positives = 0
    for k in range(GATE_IMAGES):
        us = ultrasound_image(np.random.default_rng(GATE_SEED + k))
        volume = Volume(
            voxels=(np.round(us.image * 255)[None]).astype(np.float32),
            spacing_mm=(1.0, us.pixel_mm, us.pixel_mm),
            sop_instance_uids=("2.25.1",),
            frame_of_reference_uid="",
            series_instance_uid="2.25.98",
            study_instance_uid="2.25.97",
        )
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
        assert output.label_map is not None
        if us.organ == "thyroid":
            glands.append(_dice(output.label_map[0] == GLAND, us.labels == GLAND))
        reported = {lab.value: lab for lab in output.labels if lab.name.startswith("Nodule ")}
        long_axis = {
            m.label_value: m.value for m in output.measurements if m.concept.meaning == "Long Axis"
        }
        matched: set[int] = set()
        for truth in _masks(us.labels == NODULE):
            true_long = caliper_axes_mm(truth, us.pixel_mm, us.pixel_mm)[0]
            dices = {v: _dice(output.label_map[0] == v, truth) for v in reported}
            best = max(dices, key=lambda v: dices[v], default=None)
            hit = best is not None and dices[best] >= 0.4
            if hit:
                matched.add(best)  # type: ignore[arg-type]
                errors.append(100 * abs(long_axis[best] - true_long) / true_long)  # type: ignore[index]
            if true_long >= COUNTED_MM:
                counted += 1
                found += hit
        false_positives += len(set(reported) - matched)
    sensitivity = found / max(1, counted)
    fp_rate = false_positives / GATE_IMAGES
    print(
        f"gate: thyroid Dice mean {np.mean(glands):.3f} min {min(glands):.3f}, "
        f"nodules {found}/{counted}, FP/image {fp_rate:.2f}, "
        f"long axis error median {np.median(errors):.1f} %"
    )
    assert counted >= 15 and len(glands) >= 8
    assert float(np.mean(glands)) >= float(acceptance["gland_dice_mean_min"])
    assert min(glands) >= float(acceptance["gland_dice_floor"])
    assert sensitivity >= float(acceptance["sensitivity_min"])
    assert fp_rate <= float(acceptance["false_positives_per_image_max"])
    assert float(np.median(errors)) <= float(acceptance["long_axis_error_max_pct"])


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("us-nodule", "torchscript")
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [
        (1, "69748006"),
        (2, "27925004"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    assert manifest["postprocess"]["min_instance_mm2"] == acceptance["min_instance_mm2"]
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"sensitivity >= {acceptance['sensitivity_min']}" in card
    assert f"thyroid Dice mean >= {acceptance['gland_dice_mean_min']}" in card
    assert "Not for clinical use" in card


def test_thyroid_and_breast_ultrasound_route_to_it_and_other_ultrasound_does_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    image = ultrasound_image(np.random.default_rng(3), organ="thyroid")
    thyroid = [ultrasound_to_dataset(image, seed=1)]
    breast = [
        ultrasound_to_dataset(
            image,
            seed=2,
            body_part_examined="BREAST",
            series_description="LEFT BREAST 2 O'CLOCK",
            study_description="US BREAST",
        )
    ]
    unnamed = [
        ultrasound_to_dataset(
            image,
            seed=3,
            body_part_examined=None,
            series_description="",
            study_description="US SCHILDDRÜSE",
        )
    ]
    nothing = [
        ultrasound_to_dataset(
            image, seed=7, body_part_examined=None, series_description="", study_description="US"
        )
    ]
    carotid = [
        ultrasound_to_dataset(
            image, seed=4, body_part_examined="NECK", series_description="CAROTID DOPPLER"
        )
    ]
    liver = [ultrasound_to_dataset(image, seed=5, body_part_examined="LIVER")]
    _, chest = make_ct_series(30, 32, 32, seed=6)
    studies = [thyroid, breast, unnamed, nothing, carotid, liver, chest]
    routing = route_study([series_of(s) for s in studies], rules, registry.specs)

    def models(series: list) -> tuple[str, ...]:  # type: ignore[type-arg]
        return routing.for_series(series[0].SeriesInstanceUID).models

    assert models(thyroid) == ("us-nodule",)
    assert models(breast) == ("us-nodule",)
    assert models(carotid) == ()
    assert models(liver) == ()
    assert models(chest) == ("ct-chest-lungs",)
    # no BodyPartExamined: the study description (German "thyroid") names the region
    assert models(unnamed) == ("us-nodule",)
    assert models(nothing) == ()  # no region at all: not routed


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "us"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 160, 160)))
    assert y.shape == (2, 3, 160, 160) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
