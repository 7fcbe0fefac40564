"""Train the built-in body-region classifier on generated CT slices; write TorchScript weights.

Training data: axial slices of the head, neck, chest, abdomen and pelvis from
``dicom_ai_node.testing.phantoms.region_ct`` (randomised ellipse anatomy, field of view,
position, rotation, noise, blur) plus slices of the chest phantoms of the lung model
(``dicom_ai_node.testing.phantoms.chest_ct``), all made here from seeds, plus augmented
axial slices of the inferior slab of a real head CT (the InVesalius example of Debian's
``invesalius-examples``, HEAD; :mod:`models.body_region.real_slices`): its superior slab
is held out, and scored as a series here and in the tests. No download; reproducible.
Each generated slice is drawn at 96 to 192 pixels and area-resized to 64x64, as the
node does. The MR and radiograph body-region models (``models/mr_body_region``,
``models/xr_body_region``) train the same network the same way (:func:`train`) and score
it by the same rule (:func:`classify_series`).

Scoring (held-out seeds from 10 000 on, never trained on) is per series, as the node
uses the model: three slices at 25, 50 and 75 % of a series, softmax averaged.

Usage (from the repository's root)::

    python -m models.body_region.train --out models/body_region          # full run
    python -m models.body_region.train --smoke --out /tmp/body-region    # < 60 s check
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dicom_ai_node.domain import BodyPart
from dicom_ai_node.testing.phantoms.chest_ct import chest_ct_phantom
from dicom_ai_node.testing.phantoms.region_ct import REGIONS, region_ct, region_slice
from dicom_ai_node.testing.real_volumes import RealVolume, available, held_out, invesalius_head_ct
from models._training import record
from models._training.loop import fit_classifier
from models.body_region.net import CLASSES, INPUT_SIZE, RegionNet
from models.body_region.real_slices import Augment, augmented_slices

TEST_SEED_BASE = 10_000
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
SERIES_ACCURACY_MIN = 0.95
assert tuple(r.value for r in REGIONS) == CLASSES
ACCEPTANCE = {"series_accuracy_min": SERIES_ACCURACY_MIN}


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    slices_per_region: int = 3000
    chest_phantoms: int = 40
    real_slices: int = 2000
    augment: Augment = field(default_factory=Augment)
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    eval_series_per_region: int = 40
    eval_chest_phantoms: int = 10

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(
            seed=seed,
            slices_per_region=150,
            chest_phantoms=2,
            real_slices=40,
            steps=60,
            eval_series_per_region=4,
            eval_chest_phantoms=1,
        )


def resize(hu: np.ndarray | Tensor) -> Tensor:
    """(N, H, W) HU -> (N, 1, 64, 64) float32, area interpolation (the node's own step)."""
    x = torch.as_tensor(np.asarray(hu, dtype=np.float32)).unsqueeze(1)
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")


def real_volume(load: Callable[[], RealVolume]) -> RealVolume:
    """A real volume of ``dicom_ai_node.testing.real_volumes``; fails with what to install
    when its Debian package is missing (``scripts/install-tools.sh`` installs them)."""
    missing = available()
    if missing:
        raise SystemExit(f"real volumes missing (run scripts/install-tools.sh): {missing}")
    return load()


def score_real(module: torch.nn.Module, volume: RealVolume) -> dict[str, Any]:
    """The answer on the held-out (superior) slab of a real volume, read as one series."""
    part = held_out(volume)
    index, confidence = classify_series(module, part.voxels)
    first = volume.voxels.shape[0] - part.voxels.shape[0]
    return {
        "slices": f"{first}-{volume.voxels.shape[0] - 1} of {volume.voxels.shape[0]}",
        "answer": REGIONS[index].value,
        "confidence": round(confidence, 4),
    }


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(cfg.seed)
    images: list[Tensor] = []
    labels: list[int] = []
    for index, region in enumerate(REGIONS):
        for _ in range(cfg.slices_per_region):
            size = int(rng.choice([96, 128, 160, 192]))
            images.append(resize(region_slice(region, size, float(rng.uniform()), rng)[None]))
            labels.append(index)
    chest = REGIONS.index(BodyPart.CHEST)
    for k in range(cfg.chest_phantoms):
        ph = chest_ct_phantom(24, 128, 128, (5.0, 2.8, 2.8), seed=cfg.seed * 1000 + k)
        images.append(resize(ph.hu))
        labels += [chest] * ph.hu.shape[0]
    head = real_volume(invesalius_head_ct)
    images.append(augmented_slices(head, cfg.real_slices, rng, cfg.augment))
    labels += [REGIONS.index(BodyPart.HEAD)] * cfg.real_slices
    return torch.cat(images), torch.tensor(labels)


def train(
    cfg: Any, data: tuple[Tensor, Tensor], make: Callable[[], RegionNet] = RegionNet
) -> RegionNet:
    """Train ``make()`` on (slices, region indices); ``cfg`` gives seed, steps, batch_size
    and lr. Each batch is mirrored, turned upside down (prone) or zoomed at random."""
    x, y = data

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        pick = torch.randint(0, len(x), (cfg.batch_size,), generator=generator)
        images = x[pick]
        if torch.rand((), generator=generator) < 0.5:
            images = torch.flip(images, dims=(3,))  # left-right mirror: regions are symmetric
        if torch.rand((), generator=generator) < 0.25:
            images = torch.flip(images, dims=(2,))  # prone patients: anterior at the bottom
        if torch.rand((), generator=generator) < 0.3:  # a zoomed reconstruction
            keep = int(INPUT_SIZE * (0.5 + 0.5 * float(torch.rand((), generator=generator))))
            start = (INPUT_SIZE - keep) // 2
            crop = images[:, :, start : start + keep, start : start + keep]
            images = F.interpolate(crop, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear")
        return images, y[pick]

    return fit_classifier(make, cfg, batch, F.cross_entropy)


def classify_series(module: torch.nn.Module, hu: np.ndarray) -> tuple[int, float]:
    """The node's rule: slices at 25/50/75 %, softmax averaged; (class, confidence)."""
    n = hu.shape[0]
    picks = sorted({min(n - 1, round(f * (n - 1))) for f in (0.25, 0.5, 0.75)})
    with torch.inference_mode():
        probs = torch.softmax(module(resize(hu[picks])), dim=1).mean(dim=0)
    return int(probs.argmax()), float(probs.max())


def evaluate(module: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    rng = np.random.default_rng(TEST_SEED_BASE)
    per_region: dict[str, dict[str, float]] = {}
    right = total = 0
    for index, region in enumerate(REGIONS):
        hits = 0
        for k in range(cfg.eval_series_per_region):
            size = int(rng.choice([128, 256]))
            hu = region_ct(
                region, int(rng.integers(12, 40)), size, seed=TEST_SEED_BASE + 100 * index + k
            )
            hits += classify_series(module, hu)[0] == index
        per_region[region.value] = {
            "series": cfg.eval_series_per_region,
            "accuracy": hits / cfg.eval_series_per_region,
        }
        right, total = right + hits, total + cfg.eval_series_per_region
    chest = REGIONS.index(BodyPart.CHEST)
    hits = 0
    for k in range(cfg.eval_chest_phantoms):
        ph = chest_ct_phantom(40, 256, 256, (5.0, 1.4, 1.4), seed=TEST_SEED_BASE + 5000 + k)
        hits += classify_series(module, ph.hu)[0] == chest
    per_region["CHEST (lung-model phantoms)"] = {
        "series": cfg.eval_chest_phantoms,
        "accuracy": hits / max(1, cfg.eval_chest_phantoms),
    }
    right, total = right + hits, total + cfg.eval_chest_phantoms
    return {
        "series_accuracy": right / total,
        "series": total,
        "per_region": per_region,
        "real_held_out": {
            "invesalius-head-ct": score_real(module, real_volume(invesalius_head_ct))
        },
    }


def main(argv: list[str] | None = None) -> int:
    return record.main(argv, sys.modules[__name__], export=record.export_scripted)


if __name__ == "__main__":
    sys.exit(main())
