"""Train the built-in MR body-region classifier on generated MR slices; write TorchScript weights.

Training data: axial slices of the head, neck, chest, abdomen and pelvis from
``dicom_ai_node.testing.phantoms.region_mr`` (the CT body-region anatomy given a random
MR contrast per slice: T1-, T2- and fat-suppressed looks, coil field, Rician noise,
gain), plus slices of the brain phantoms of the atrophy model
(``dicom_ai_node.testing.phantoms.brain_mr``) and of the liver phantoms of the liver
model (``dicom_ai_node.testing.phantoms.liver_mr``), all made here from seeds, plus
augmented axial slices of the inferior slab of a real T1 of the head (Colin27, of
Debian's ``mricron-data``, HEAD; :mod:`models.body_region.real_slices`): its superior
slab is held out, and scored as a series here and in the tests. No download;
reproducible. The network, the training loop and the node's three-slice rule
are the CT body-region model's (``models/body_region``); the network normalises each
slice by its own 1st and 99th percentile, since MR has no units.

Usage (from the repository's root)::

    python -m models.mr_body_region.train --out models/mr_body_region          # full run
    python -m models.mr_body_region.train --smoke --out /tmp/mr-body-region    # < 60 s
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicom_ai_node.domain import BodyPart
from dicom_ai_node.testing.phantoms.brain_mr import brain_mr_phantom
from dicom_ai_node.testing.phantoms.liver_mr import liver_mr_phantom
from dicom_ai_node.testing.phantoms.region_ct import REGIONS
from dicom_ai_node.testing.phantoms.region_mr import region_mr, region_mr_slice
from dicom_ai_node.testing.real_volumes import colin27_t1
from models._training import record
from models.body_region import train as ct_region
from models.body_region.net import RegionNet
from models.body_region.real_slices import Augment, augmented_slices

TEST_SEED_BASE = 10_000
SERIES_ACCURACY_MIN = 0.95
HEAD, ABDOMEN = REGIONS.index(BodyPart.HEAD), REGIONS.index(BodyPart.ABDOMEN)
ACCEPTANCE = {"series_accuracy_min": SERIES_ACCURACY_MIN}


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    slices_per_region: int = 3000
    brain_phantoms: int = 40
    liver_phantoms: int = 40
    real_slices: int = 2000
    augment: Augment = field(default_factory=Augment)
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    eval_series_per_region: int = 40
    eval_phantoms: int = 10

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(
            seed=seed,
            slices_per_region=150,
            brain_phantoms=2,
            liver_phantoms=2,
            real_slices=40,
            steps=60,
            eval_series_per_region=4,
            eval_phantoms=1,
        )


def make_net() -> RegionNet:
    """The CT body-region network with per-image percentile normalisation."""
    return RegionNet(len(REGIONS), percentile=True)


def train(cfg: Config, data: tuple[Tensor, Tensor]) -> RegionNet:
    """The CT body-region model's training of :func:`make_net`."""
    return ct_region.train(cfg, data, make=make_net)


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(cfg.seed)
    images: list[Tensor] = []
    labels: list[int] = []
    for index, region in enumerate(REGIONS):
        for _ in range(cfg.slices_per_region):
            size = int(rng.choice([96, 128, 160, 192, 256]))
            slice_ = region_mr_slice(region, size, float(rng.uniform()), rng)
            images.append(ct_region.resize(slice_[None]))
            labels.append(index)
    for k in range(cfg.brain_phantoms):
        brain = brain_mr_phantom(int(rng.integers(12, 28)), 192, seed=cfg.seed * 1000 + k)
        images.append(ct_region.resize(brain.image))
        labels += [HEAD] * brain.image.shape[0]
    for k in range(cfg.liver_phantoms):
        liver = liver_mr_phantom(seed=cfg.seed * 1000 + k, size=192)
        images.append(ct_region.resize(liver.image))
        labels += [ABDOMEN] * liver.image.shape[0]
    colin = ct_region.real_volume(colin27_t1)
    images.append(augmented_slices(colin, cfg.real_slices, rng, cfg.augment))
    labels += [HEAD] * cfg.real_slices
    return torch.cat(images), torch.tensor(labels)


def evaluate(module: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    rng = np.random.default_rng(TEST_SEED_BASE)
    per_region: dict[str, dict[str, float]] = {}
    right = total = 0

    def score(name: str, hits: int, count: int) -> None:
        nonlocal right, total
        per_region[name] = {"series": count, "accuracy": hits / max(1, count)}
        right, total = right + hits, total + count

    for index, region in enumerate(REGIONS):
        hits = 0
        for k in range(cfg.eval_series_per_region):
            size = int(rng.choice([128, 256]))
            image = region_mr(
                region, int(rng.integers(12, 40)), size, seed=TEST_SEED_BASE + 100 * index + k
            )
            hits += ct_region.classify_series(module, image)[0] == index
        score(region.value, hits, cfg.eval_series_per_region)
    hits = sum(
        ct_region.classify_series(
            module, brain_mr_phantom(24, 256, seed=TEST_SEED_BASE + 5000 + k).image
        )[0]
        == HEAD
        for k in range(cfg.eval_phantoms)
    )
    score("HEAD (atrophy-model brain phantoms)", hits, cfg.eval_phantoms)
    hits = sum(
        ct_region.classify_series(module, liver_mr_phantom(seed=TEST_SEED_BASE + 6000 + k).image)[0]
        == ABDOMEN
        for k in range(cfg.eval_phantoms)
    )
    score("ABDOMEN (liver-model phantoms)", hits, cfg.eval_phantoms)
    colin = ct_region.real_volume(colin27_t1)
    return {
        "series_accuracy": right / total,
        "series": total,
        "per_region": per_region,
        "real_held_out": {"colin27-t1": ct_region.score_real(module, colin)},
    }


def main(argv: list[str] | None = None) -> int:
    return record.main(argv, sys.modules[__name__], export=record.export_scripted)


if __name__ == "__main__":
    sys.exit(main())
