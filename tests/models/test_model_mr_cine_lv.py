"""Built-in model mr-cine-lv: quality gate through the node's own loader, runner and cine
post-processing on freshly generated cine series (Dice at end-diastole and end-systole,
the ejection fraction or fractional area change against the truth), manifest and card,
routing of short-axis cine to it and of other cardiac series to nothing, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.phantoms.brain_mr import brain_mr_phantom
from dicom_ai_node.testing.phantoms.cine_mr import CAVITY, MYOCARDIUM, cine_phantom
from dicom_ai_node.testing.series import cine_to_datasets, mr_to_datasets

from ..model_gate import load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "mr_cine_lv"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE = ((20_000, 1), (20_001, 4), (20_002, 1), (20_003, 4))


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def test_quality_gate_on_fresh_series() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("mr-cine-lv")
    for seed, levels in GATE:
        ph = cine_phantom(seed, levels=levels)
        volume, _, issues = load_volume(cine_to_datasets(ph, seed=seed), cine=True)
        assert volume is not None and issues == ()
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
        assert output.label_map is not None
        frames = output.label_map.reshape(ph.labels.shape)
        ed, es = (int(np.flatnonzero((frames == v).any(axis=(0, 2, 3)))[0]) for v in (1, 3))
        cavity = [
            _dice(frames[:, ed] == 1, ph.labels[:, ed] == CAVITY),
            _dice(frames[:, es] == 3, ph.labels[:, es] == CAVITY),
        ]
        myocardium = _dice(frames[:, ed] == 2, ph.labels[:, ed] == MYOCARDIUM)
        by = {m.concept.meaning: m.value for m in output.measurements if m.label_value == 3}
        areas = ph.cavity_mm2().sum(axis=0)
        truth = 100 * (1 - areas.min() / areas.max())  # the same for volumes (one gap)
        found = by["Left ventricular Ejection fraction" if levels > 1 else "Fractional area change"]
        print(
            f"gate {seed} ({levels} levels): cavity Dice {min(cavity):.3f}, myocardium "
            f"{myocardium:.3f}, {found:.1f} % against {truth:.1f} %, ED {ed} ES {es} "
            f"(truth 0, {ph.end_systole})"
        )
        assert min(cavity) >= float(acceptance["cavity_dice_min"]), (seed, cavity)
        assert myocardium >= float(acceptance["myocardium_dice_min"]), (seed, myocardium)
        assert abs(found - truth) <= float(acceptance["function_error_max_points"]), seed
        assert ed in (0, len(areas) - 1, 1) and abs(es - ph.end_systole) <= 1


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("mr-cine-lv", "torchscript")
    assert manifest["preprocess"]["geometry"] == "cine"
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [
        (1, "87878005"),
        (2, "74281007"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"cavity Dice >= {acceptance['cavity_dice_min']}" in card
    assert f"within {acceptance['function_error_max_points']} points" in card
    assert "Not for clinical use" in card


def test_short_axis_cine_routes_to_it_and_other_cardiac_series_do_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    ph = cine_phantom(1, levels=1, phases=16, size=64)
    named = {
        "CINE SAX": ("mr-cine-lv",),
        "sa_cine_bTFE": ("mr-cine-lv",),
        "TrueFISP short axis": ("mr-cine-lv",),
        "CINE 4CH": (),
        "cine 2ch": (),
        "SAX LGE PSIR": (),
        "T1 MAP SAX": (),
        "TAGGING SAX": (),
    }
    series = {d: cine_to_datasets(ph, seed=k, series_description=d) for k, d in enumerate(named)}
    brain = mr_to_datasets(
        brain_mr_phantom(16, 32, seed=5),
        seed=9,
        series_description="CINE SAX",  # a head MR is not a heart, whatever its name
    )
    routing = route_study([series_of(s) for s in [*series.values(), brain]], rules, registry.specs)
    for description, expected in named.items():
        got = routing.for_series(series[description][0].SeriesInstanceUID).models
        assert got == expected, description
    assert routing.for_series(brain[0].SeriesInstanceUID).models == ()


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "cine"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((20, 1, 128, 128)))
    assert y.shape == (20, 3, 128, 128) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
