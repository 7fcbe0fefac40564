"""Built-in model mr-brain-atrophy: quality gate through the node's own runner on freshly
generated phantoms (Dice, the ventricle-to-brain ratio, each side's hippocampal occupancy
and MTA-style grade), manifest and card, routing of a T1 brain MR to it and to nothing
else, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import ModelOutput, Volume
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.phantoms.brain_mr import (
    BRAIN,
    LEFT_HIPPOCAMPUS,
    LEFT_TEMPORAL_HORN,
    RIGHT_HIPPOCAMPUS,
    RIGHT_TEMPORAL_HORN,
    VENTRICLES,
    brain_mr_phantom,
    hippocampal_occupancy,
)
from dicom_ai_node.testing.series import make_ct_series, mr_to_datasets

from ..model_gate import load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "mr_brain_atrophy"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEEDS = (20_000, 20_001, 20_002)
#: global and medial temporal atrophy of each gate phantom: mild, moderate, severe
GATE_ATROPHY = ((0.1, 0.1), (0.5, 0.5), (0.9, 0.9))
SIDES = (
    ("right", RIGHT_HIPPOCAMPUS, RIGHT_TEMPORAL_HORN),
    ("left", LEFT_HIPPOCAMPUS, LEFT_TEMPORAL_HORN),
)


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def _by_group(output: ModelOutput, concept: str) -> dict[int, float]:
    return {m.label_value: m.value for m in output.measurements if m.concept.value == concept}


def test_quality_gate_on_fresh_phantoms() -> None:
    """Through the node's runner (its percentile scaling, batches, argmax and the ratios
    and grades in ``postprocess.ratios``), at mild, moderate and severe atrophy."""
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("mr-brain-atrophy")
    ratios, occupancies = [], []
    for seed, (atrophy, medial) in zip(GATE_SEEDS, GATE_ATROPHY, strict=True):
        ph = brain_mr_phantom(28, 192, seed, atrophy=atrophy, medial_atrophy=medial)
        volume = Volume(
            voxels=ph.image,
            spacing_mm=ph.spacing_mm,
            sop_instance_uids=tuple(f"2.25.{k + 1}" for k in range(len(ph.image))),
            frame_of_reference_uid="2.25.99",
            series_instance_uid="2.25.98",
            study_instance_uid="2.25.97",
        )
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
        assert output.label_map is not None
        brain = _dice(output.label_map == BRAIN, ph.labels == BRAIN)
        ventricles = _dice(output.label_map == VENTRICLES, ph.labels == VENTRICLES)
        [vbr] = _by_group(output, "VBR").values()
        error = 100 * (vbr - ph.ventricle_to_brain_ratio) / ph.ventricle_to_brain_ratio
        hoc, grades = _by_group(output, "HOC"), _by_group(output, "MTAGRADE")
        print(
            f"gate {seed}: brain {brain:.3f} ventricles {ventricles:.3f} VBR error {error:.1f} %"
            f" HOC {hoc} grades {grades} (drawn {ph.mta_grade})"
        )
        assert brain >= float(acceptance["brain_dice_min"]), (seed, brain)
        assert ventricles >= float(acceptance["ventricle_dice_min"]), (seed, ventricles)
        assert abs(error) <= float(acceptance["vbr_error_max_abs_pct"]), (seed, error)
        for side, hippocampus, horn in SIDES:
            dice = _dice(output.label_map == hippocampus, ph.labels == hippocampus)
            assert dice >= float(acceptance["hippocampus_dice_min"]), (seed, side, dice)
            truth = ph.occupancy(hippocampus, horn)
            assert abs(hoc[hippocampus] - truth) <= float(acceptance["hoc_error_max_abs"]), (
                seed,
                side,
                hoc[hippocampus],
                truth,
            )
            assert abs(grades[hippocampus] - ph.mta_grade) <= 1, (seed, side, grades)
        ratios.append(vbr)
        occupancies.append(min(hoc.values()))
    assert ratios == sorted(ratios)  # more atrophy, larger ratio
    assert occupancies == sorted(occupancies, reverse=True)  # more atrophy, smaller HOC


def test_grade_edges_are_the_phantoms_occupancy_at_its_grade_borders() -> None:
    """The manifest's MTA-style bands are not tuned numbers: each edge is the drawn
    anatomy's occupancy where the phantom's truth grade changes."""
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    graded = [r for r in manifest["postprocess"]["ratios"] if "grades" in r]
    assert [(r["label"], r["numerator"], r["denominator"]) for r in graded] == [
        (RIGHT_HIPPOCAMPUS, [RIGHT_HIPPOCAMPUS], [RIGHT_HIPPOCAMPUS, RIGHT_TEMPORAL_HORN]),
        (LEFT_HIPPOCAMPUS, [LEFT_HIPPOCAMPUS], [LEFT_HIPPOCAMPUS, LEFT_TEMPORAL_HORN]),
    ]
    edges = [round(hippocampal_occupancy(m), 3) for m in (0.2, 0.4, 0.6, 0.8)]
    for ratio in graded:
        assert ratio["grades"]["below"] == edges


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("mr-brain-atrophy", "torchscript")
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [
        (lab["value"], lab["type"][0], lab.get("laterality", [""])[0]) for lab in manifest["labels"]
    ] == [
        (1, "12738006", ""),
        (2, "35764002", ""),
        (3, "5366008", "24028007"),
        (4, "5366008", "7771000"),
        (5, "53118009", "24028007"),
        (6, "53118009", "7771000"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"brain Dice >= {acceptance['brain_dice_min']}" in card
    assert f"ventricle Dice >= {acceptance['ventricle_dice_min']}" in card
    assert f"hippocampus Dice >= {acceptance['hippocampus_dice_min']}" in card
    assert f"occupancy within {acceptance['hoc_error_max_abs']}" in card
    assert "Not for clinical use" in card


def test_a_t1_brain_mr_routes_to_it_and_flair_or_ct_do_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    ph = brain_mr_phantom(16, 32, seed=5)
    t1 = mr_to_datasets(ph, seed=5, series_description="T1 MPRAGE AX")
    flair = mr_to_datasets(ph, seed=6, series_description="FLAIR AX")
    _, chest = make_ct_series(30, 32, 32, seed=6)
    routing = route_study(
        [series_of(t1), series_of(flair), series_of(chest)], rules, registry.specs
    )
    assert routing.for_series(t1[0].SeriesInstanceUID).models == ("mr-brain-atrophy",)
    assert routing.for_series(flair[0].SeriesInstanceUID).models == ()
    assert routing.for_series(chest[0].SeriesInstanceUID).models == ("ct-chest-lungs",)


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "brain"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 160, 160)))
    assert y.shape == (2, 7, 160, 160) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
