"""Built-in model cta-aneurysm: quality gate through the node's own runner and
post-processing on freshly generated head CT angiograms (artery Dice, aneurysm
sensitivity, false positives, long-axis error), manifest and card, routing of a head CTA
to it and of a plain head CT or a chest CTA to nothing else, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import components
from dicom_ai_node.infer.findings.measure import long_axis_mm
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.phantoms.head_cta import ANEURYSM, ARTERY, cta_phantom
from dicom_ai_node.testing.series import make_ct_series, phantom_to_datasets

from ..model_gate import load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "cta_aneurysm"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEEDS = tuple(range(20_000, 20_008))
#: Aneurysms this long or longer count for sensitivity (train.py, the card).
COUNTED_MM = 8.0


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def test_quality_gate_on_fresh_angiograms() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("cta-aneurysm")
    arteries, errors = [], []
    counted = found = false_positives = 0
    small = [0, 0]  # found, drawn: aneurysms of 5-8 mm
    for seed in GATE_SEEDS:
        ph = cta_phantom(seed, aneurysms=2)
        volume = Volume(ph.hu, ph.spacing_mm, (), "", "", "")
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
        assert output.label_map is not None
        arteries.append(_dice(output.label_map == ARTERY, ph.labels == ARTERY))
        reported = {lab.value for lab in output.labels if lab.name.startswith("Aneurysm ")}
        long_axis = {
            m.label_value: m.value for m in output.measurements if m.concept.meaning == "Long Axis"
        }
        matched: set[int] = set()
        for box, local in components(ph.labels == ANEURYSM):
            true_long = long_axis_mm(local, ph.spacing_mm[1], ph.spacing_mm[2])
            hits = [v for v in reported if (output.label_map[box][local] == v).any()]
            if hits:
                best = max(hits, key=lambda v: int((output.label_map[box][local] == v).sum()))
                matched.add(best)
                errors.append(100 * abs(long_axis[best] - true_long) / true_long)
            if true_long >= COUNTED_MM:
                counted += 1
                found += bool(hits)
            elif true_long >= 5.0:  # reported, not gated: the card's known weakness
                small[0] += bool(hits)
                small[1] += 1
        false_positives += len(reported - matched)
    sensitivity = found / max(1, counted)
    fp_rate = false_positives / len(GATE_SEEDS)
    print(
        f"gate: artery Dice min {min(arteries):.3f}, aneurysms {found}/{counted} "
        f"(5-8 mm: {small[0]}/{small[1]}), "
        f"FP/scan {fp_rate:.2f}, long axis error median {np.median(errors):.1f} %"
    )
    assert counted >= 5
    assert min(arteries) >= float(acceptance["artery_dice_min"])
    assert sensitivity >= float(acceptance["sensitivity_min"])
    assert fp_rate <= float(acceptance["false_positives_per_scan_max"])
    assert float(np.median(errors)) <= float(acceptance["long_axis_error_max_pct"])


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("cta-aneurysm", "torchscript")
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [
        (1, "51114001"),
        (2, "85659009"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"sensitivity >= {acceptance['sensitivity_min']}" in card
    assert f"artery Dice >= {acceptance['artery_dice_min']}" in card
    assert "Not for clinical use" in card


def _head(seed: int, description: str, body_part: str | None = "HEAD") -> list:  # type: ignore[type-arg]
    ph = cta_phantom(seed, slices=24, size=64)
    return phantom_to_datasets(
        ChestPhantom(hu=ph.hu, labels=ph.labels, spacing_mm=ph.spacing_mm),
        seed=seed,
        body_part_examined=body_part,
        series_description=description,
        study_description="CT HEAD",
    )


def test_a_head_cta_routes_to_it_and_a_plain_head_ct_or_chest_cta_do_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    cta = _head(1, "CTA COW 0.75mm")
    angio = _head(2, "Angio Circle of Willis 0.6")
    plain = _head(3, "HEAD AXIAL 0.75mm")
    mip = _head(4, "CTA MIP AX")
    _, chest = make_ct_series(30, 32, 32, seed=6)
    for ds in chest:
        ds.SeriesDescription = "CTA PULMONARY 1mm"
    routing = route_study(
        [series_of(s) for s in (cta, angio, plain, mip, chest)], rules, registry.specs
    )
    assert routing.for_series(cta[0].SeriesInstanceUID).models == ("cta-aneurysm",)
    assert routing.for_series(angio[0].SeriesInstanceUID).models == ("cta-aneurysm",)
    assert routing.for_series(plain[0].SeriesInstanceUID).models == ()
    assert routing.for_series(mip[0].SeriesInstanceUID).models == ()
    assert routing.for_series(chest[0].SeriesInstanceUID).models == ("ct-chest-lungs",)


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "cta"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 3, 160, 160)) * 500)  # 2.5-D
    assert y.shape == (2, 3, 160, 160) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
