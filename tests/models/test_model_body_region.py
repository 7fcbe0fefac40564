"""The built-in body-region model: its quality gate on freshly generated series, its
answer on the held-out slab of a real head CT, that its training never reads that slab,
its manifest and card, its TorchScript contract, and the smoke run of its training
script."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.domain import BodyPart
from dicom_ai_node.infer.bodyregion import BodyRegionModel, pick_slices
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.testing.phantoms.chest_ct import chest_ct_phantom
from dicom_ai_node.testing.phantoms.region_ct import REGIONS, region_ct
from dicom_ai_node.testing.real_volumes import (
    HELD_OUT,
    RealVolume,
    colin27_t1,
    held_out,
    invesalius_head_ct,
    to_datasets,
    training_part,
)
from dicom_ai_node.testing.series import write_series
from models.body_region import real_slices
from models.body_region import train as ct_train
from models.mr_body_region import train as mr_train

from ..model_gate import train_smoke

MODELS = Path(__file__).resolve().parents[2] / "models"
#: What the held-out voxels are set to in the checks that training never reads them: far
#: above any real or generated value (a NaN would be drawn again as an empty view).
POISON = 1e7
MODEL_DIR = MODELS / "body_region"
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


def classify_real(volume: RealVolume, folder: Path) -> tuple[BodyPart, float]:
    """The node's answer for a real volume written as a DICOM series that names no body
    part, read by the body-region models of the models folder as routing reads it."""
    datasets = to_datasets(volume, seed=18, series_description="", study_description="")
    assert "BodyPartExamined" not in datasets[0]
    models = ModelRegistry(MODELS, Device("cpu")).body_region_model()
    assert models is not None
    answer = models.classify_files(write_series(datasets, folder))
    assert answer is not None
    return answer


@pytest.mark.usefixtures("real_volumes")
def test_the_held_out_slab_of_a_real_head_ct_is_head(tmp_path: Path) -> None:
    """Issue 18: the superior 54 of the 108 slices of the InVesalius head CT, never trained
    on, are called HEAD (the card's Real images table gives the confidence)."""
    volume = invesalius_head_ct()
    region, confidence = classify_real(held_out(volume), tmp_path)
    assert region == BodyPart.HEAD, (region, confidence)
    assert confidence > 0.5
    recorded = _metrics()["held_out"]["real_held_out"]["invesalius-head-ct"]  # type: ignore[index]
    assert recorded["answer"] == "HEAD"


@pytest.mark.usefixtures("real_volumes")
@pytest.mark.parametrize("load", [invesalius_head_ct, colin27_t1])
def test_training_never_reads_the_held_out_slab(load: Callable[[], RealVolume]) -> None:
    """The training part and the held-out part of each real volume are disjoint slabs, the
    held-out one superior; augmentation of a volume whose held-out slices are
    :data:`POISON` gives no slice near that value (no held-out voxel reaches training,
    whatever the draw)."""
    volume = load()
    train, test = training_part(volume), held_out(volume)
    split = HELD_OUT[volume.name]
    assert train.voxels.shape[0] == split
    assert train.voxels.shape[0] + test.voxels.shape[0] == volume.voxels.shape[0]
    along = volume.normal  # inferior -> superior for these axial volumes
    assert along[2] > 0.99
    top_train = np.dot(train.first_position, along) + (split - 1) * volume.spacing_mm[0]
    assert np.dot(test.first_position, along) > top_train
    poisoned = np.array(volume.voxels)
    poisoned[split:] = POISON
    seen = real_slices.training_slices(replace(volume, voxels=poisoned))
    assert seen.shape[0] == split and float(seen.max()) < POISON
    rng = np.random.default_rng(0)
    slices = real_slices.augmented_slices(replace(volume, voxels=poisoned), 16, rng)
    assert slices.shape == (16, 1, 64, 64) and float(slices.abs().max()) < POISON / 10


@pytest.mark.usefixtures("real_volumes")
def test_the_training_sets_take_their_real_slices_from_the_training_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both training scripts build their sets through :func:`real_slices.augmented_slices`,
    which reads the training part alone: with every held-out voxel :data:`POISON`, no
    value of either set comes near it, and each holds its real HEAD slices."""
    for script, name in ((ct_train, "invesalius_head_ct"), (mr_train, "colin27_t1")):
        volume: RealVolume = getattr(script, name)()
        poisoned = np.array(volume.voxels)
        poisoned[HELD_OUT[volume.name] :] = POISON
        monkeypatch.setattr(script, name, lambda v=volume, p=poisoned: replace(v, voxels=p))
        cfg = script.Config.smoke(0)
        phantoms = ("chest_phantoms", "brain_phantoms", "liver_phantoms")
        cfg = replace(
            cfg, slices_per_region=1, real_slices=16, **{k: 0 for k in phantoms if hasattr(cfg, k)}
        )
        x, y = script.make_training_set(cfg)
        assert float(x.abs().max()) < POISON / 10, script.__name__
        head = REGIONS.index(BodyPart.HEAD)
        assert int((y == head).sum()) >= cfg.real_slices


@pytest.mark.slow
def test_smoke_training_writes_a_model_the_node_loads(tmp_path: Path) -> None:
    out = tmp_path / "body_region"
    train_smoke(MODEL_DIR, out)
    (out / "model.toml").write_text((MODEL_DIR / "model.toml").read_text())
    region, confidence = _classify(_model(out), region_ct(BodyPart.CHEST, 12, 128, seed=7))
    assert region in REGIONS and 0.0 < confidence <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True and 0.0 <= metrics["held_out"]["series_accuracy"] <= 1.0
