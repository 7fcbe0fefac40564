"""Built-in model mg-calcification: quality gate through the node's own runner (tiles at
0.1 mm) and clustering on freshly generated mammograms, 6-9 cm details and whole ones
(cluster and calcification sensitivity, false clusters), manifest and card, routing of a
for-presentation mammogram to it and of other images to nothing else, smoke training."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.route import load_rules, route_study
from dicom_ai_node.testing.images import mammogram_to_dataset, radiograph_to_dataset
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph
from dicom_ai_node.testing.phantoms.mammography import CALCIFICATION, Mammogram, mammogram

from ..model_gate import load_weights, series_of, train_smoke

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "mg_calcification"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEED = 20_000
GATE_IMAGES = 12
# whole 30 cm mammograms, two clusters each (train.py trains on whole ones from 5 000)
WHOLE_IMAGES = 2


def _metrics() -> dict[str, object]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


def _score(runner: Any, mg: Mammogram) -> tuple[int, int, int, int, int]:
    """Run the node's runner on one mammogram: (clusters, found, false clusters, truth
    calcification pixels, those within 2 pixels of a found calcification)."""
    volume = Volume(
        (np.round(mg.image * 4095)[None]).astype(np.float32),
        (1.0, mg.pixel_mm, mg.pixel_mm),
        ("2.25.1",),
        "",
        "2.25.2",
        "2.25.3",
    )
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    assert output.label_map is not None
    plane = output.label_map[0]
    reported = {lab.value for lab in output.labels if lab.name.startswith("Calcification cluster")}
    used: set[int] = set()
    clusters = found = 0
    for cluster in mg.clusters:
        if len(cluster.specks) < 3:
            continue
        clusters += 1
        # the specks keep their own label; the cluster's label lies around them
        near = [
            plane[max(0, int(r) - 5) : int(r) + 6, max(0, int(c) - 5) : int(c) + 6]
            for r, c in cluster.specks
        ]
        hits = [int(v) for window in near for v in np.unique(window) if int(v) in reported]
        found += bool(hits)
        used |= set(hits)
    truth = np.argwhere(mg.labels == CALCIFICATION)
    close = np.zeros(plane.shape, bool)  # within 2 pixels of a found calcification
    for dr in range(-2, 3):
        for dc in range(-2, 3):
            close |= np.roll(plane == CALCIFICATION, (dr, dc), axis=(0, 1))
    return (
        clusters,
        found,
        len(reported - used),
        len(truth),
        int(close[truth[:, 0], truth[:, 1]].sum()),
    )


def test_quality_gate_on_fresh_mammograms() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("mg-calcification")
    scores = [
        _score(runner, mammogram(np.random.default_rng(GATE_SEED + k))) for k in range(GATE_IMAGES)
    ]
    clusters, found, false_clusters, specks, specks_found = map(sum, zip(*scores, strict=True))
    print(
        f"gate: clusters {found}/{clusters}, false clusters {false_clusters} in "
        f"{GATE_IMAGES} images, calcification pixels found {specks_found}/{specks}"
    )
    assert clusters >= 8
    assert found / clusters >= float(acceptance["cluster_sensitivity_min"])
    assert false_clusters / GATE_IMAGES <= float(acceptance["false_clusters_per_image_max"])
    assert specks_found / specks >= float(acceptance["speck_sensitivity_min"])


def test_quality_gate_on_fresh_whole_mammograms() -> None:
    """Whole 30 cm mammograms (version 1.1 trains on tiles of them too), read in tiles."""
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    runner = ModelRegistry(REPO / "models", Device("cpu")).runner("mg-calcification")
    scores = [
        _score(runner, mammogram(np.random.default_rng(GATE_SEED + 500 + k), 2, height_mm=300.0))
        for k in range(WHOLE_IMAGES)
    ]
    clusters, found, false_clusters, specks, specks_found = map(sum, zip(*scores, strict=True))
    print(
        f"whole: clusters {found}/{clusters}, false clusters {false_clusters} in "
        f"{WHOLE_IMAGES} images, calcification pixels found {specks_found}/{specks}"
    )
    assert clusters >= 3
    assert found / clusters >= float(acceptance["whole_cluster_sensitivity_min"])
    assert false_clusters / WHOLE_IMAGES <= float(acceptance["false_clusters_per_image_max"])


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert (manifest["name"], manifest["runner"]) == ("mg-calcification", "torchscript")
    assert manifest["preprocess"]["tile"] is True
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [(1, "309587003")]
    assert manifest["postprocess"]["clusters"]["type"][0] == "129769006"
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"cluster sensitivity >= {acceptance['cluster_sensitivity_min']}" in card
    whole = acceptance["whole_cluster_sensitivity_min"]
    assert f"whole mammograms: cluster sensitivity >= {whole}" in card
    assert manifest["preprocess"]["intensity_ceiling"] == 2.0
    assert "Not for clinical use" in card


def test_a_mammogram_routes_to_it_and_other_images_do_not() -> None:
    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    mg = mammogram(np.random.default_rng(3), clusters=1)
    presentation = mammogram_to_dataset(mg, seed=1)
    coded_only = mammogram_to_dataset(mg, seed=2, body_part_examined=None)
    processing = mammogram_to_dataset(mg, seed=3)
    processing.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2.1"  # For Processing
    chest = radiograph_to_dataset(chest_radiograph(64, np.random.default_rng(4)), seed=5)
    studies = [[presentation], [coded_only], [processing], [chest]]
    routing = route_study([series_of(s) for s in studies], rules, registry.specs)
    models = [routing.for_series(s[0].SeriesInstanceUID).models for s in studies]
    # no BodyPartExamined: the Anatomic Region Sequence (breast) names the region
    assert models == [("mg-calcification",), ("mg-calcification",), (), ("cxr-abnormal",)]


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "mg"
    train_smoke(MODEL_DIR, out, timeout_s=180)
    with torch.inference_mode():
        y = load_weights(out / "model.pt")(torch.rand((2, 1, 128, 128)))
    assert y.shape == (2, 2, 128, 128) and y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
