"""Built-in model mr-liver-lesion: quality gate through the node's own runner and
post-processing (each lesion its majority class) on freshly generated liver MR (liver
Dice, lesion sensitivity, the class of each found lesion, false positives), manifest and
card, routing of an abdominal T2 MR to it and of other series to nothing else, smoke
training, and the class vote itself."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import components
from dicom_ai_node.infer.findings.lesions import segmentation_output
from dicom_ai_node.infer.findings.measure import long_axis_mm
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.phantoms.brain_mr import BrainPhantom
from dicom_ai_node.testing.phantoms.liver_mr import (
    CYST,
    HAEMANGIOMA,
    KINDS,
    LIVER,
    METASTASIS,
    liver_mr_phantom,
)
from dicom_ai_node.testing.series import mr_to_datasets

from ..model_gate import load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "mr_liver_lesion"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEEDS = tuple(range(20_000, 20_008))
COUNTED_MM = 10.0
NAMES = {"Cyst": CYST, "Haemangioma": HAEMANGIOMA, "Metastasis": METASTASIS}


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def test_quality_gate_on_fresh_series() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("mr-liver-lesion")
    livers = []
    counted = found = right = false_positives = 0
    for k, seed in enumerate(GATE_SEEDS):
        kinds = ((CYST, METASTASIS), (HAEMANGIOMA, METASTASIS), (CYST, HAEMANGIOMA))[k % 3]
        ph = liver_mr_phantom(seed, lesions=2, kinds=kinds)
        volume = Volume(ph.image, ph.spacing_mm, (), "", "", "")
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
        assert output.label_map is not None
        livers.append(_dice(output.label_map == LIVER, ph.labels == LIVER))
        reported = {
            lab.value: NAMES[lab.name.rsplit(" ", 1)[0]]
            for lab in output.labels
            if lab.name.rsplit(" ", 1)[0] in NAMES and " " in lab.name
        }
        used: set[int] = set()
        for box, local in components(np.isin(ph.labels, list(KINDS))):
            kind = int(np.bincount(ph.labels[box][local]).argmax())
            hits = [v for v in reported if (output.label_map[box][local] == v).any()]
            used |= set(hits)
            if long_axis_mm(local, ph.spacing_mm[1], ph.spacing_mm[2]) >= COUNTED_MM:
                counted += 1
                found += bool(hits)
                if hits:
                    best = max(hits, key=lambda v: int((output.label_map[box][local] == v).sum()))
                    right += reported[best] == kind
        false_positives += len(set(reported) - used)
    print(
        f"gate: liver Dice min {min(livers):.3f}, lesions {found}/{counted}, "
        f"class right {right}/{found}, FP/series {false_positives / len(GATE_SEEDS):.2f}"
    )
    assert counted >= 10
    assert min(livers) >= float(acceptance["liver_dice_min"])
    assert found / counted >= float(acceptance["sensitivity_min"])
    assert right / max(1, found) >= float(acceptance["class_accuracy_min"])
    assert false_positives / len(GATE_SEEDS) <= float(acceptance["false_positives_per_series_max"])


def test_each_lesion_takes_the_class_most_of_it_has() -> None:
    """A region two-thirds metastasis and one-third cyst is one metastasis."""
    manifest = load_manifest(MODEL_DIR / "model.toml")
    labels = np.zeros((4, 40, 40), np.uint8)
    labels[:, 5:35, 5:35] = LIVER
    labels[1:3, 10:16, 10:19] = METASTASIS
    labels[1:3, 10:16, 19:22] = CYST
    labels[1:3, 25:31, 25:31] = HAEMANGIOMA
    volume = Volume(np.zeros(labels.shape, np.float32), (5.0, 1.0, 1.0), (), "", "", "")
    out = segmentation_output(manifest, labels, volume)
    names = sorted(lab.name for lab in out.labels if lab.value > 4)
    assert names == ["Haemangioma 1", "Metastasis 1"]
    [metastasis] = [lab for lab in out.labels if lab.name == "Metastasis 1"]
    assert int((labels == metastasis.value).sum()) == 2 * 6 * 12


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("mr-liver-lesion", "torchscript")
    assert manifest["postprocess"]["vote_instances"] is True
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [
        (1, "10200004"),
        (2, "441457006"),
        (3, "253053003"),
        (4, "14799000"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"sensitivity >= {acceptance['sensitivity_min']}" in card
    assert f"right class >= {acceptance['class_accuracy_min']}" in card
    assert "Not for clinical use" in card


def test_an_abdominal_t2_mr_routes_to_it_and_other_series_do_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    ph = liver_mr_phantom(2, slices=14, size=32)
    as_brain = BrainPhantom(ph.image, ph.labels, ph.spacing_mm, 0.0)  # any MR volume
    t2 = mr_to_datasets(
        as_brain, seed=1, body_part_examined="ABDOMEN", series_description="T2 HASTE AX"
    )
    liver = mr_to_datasets(
        as_brain, seed=2, body_part_examined="LIVER", series_description="t2_tse_tra"
    )
    t1 = mr_to_datasets(
        as_brain, seed=3, body_part_examined="ABDOMEN", series_description="T1 VIBE AX"
    )
    dwi = mr_to_datasets(
        as_brain, seed=4, body_part_examined="ABDOMEN", series_description="DWI b800 T2"
    )
    studies = [t2, liver, t1, dwi]
    routing = route_study([series_of(s) for s in studies], rules, registry.specs)
    models = [routing.for_series(s[0].SeriesInstanceUID).models for s in studies]
    # the kidney model reads abdominal T2 and post-contrast MR as well
    kidney = "mr-kidney-tumour"
    assert models == [("mr-liver-lesion", kidney), ("mr-liver-lesion", kidney), (kidney,), ()]


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "liver"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 160, 160)))
    assert y.shape == (2, 5, 160, 160) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
