"""Train the built-in radiograph body-region classifier on generated films; write weights.

Training data: radiographs of the head, chest, abdomen, pelvis, upper and lower
extremity from ``dicom_ai_node.testing.phantoms.region_xr`` (projected ellipsoids and
bone tubes; the chest films of the ``cxr-abnormal`` generator; hand, forearm, elbow and
shoulder views for the arm, foot, ankle, knee and lower-leg views for the leg), each
cropped to a random aspect ratio and area-resized to 64x64 as the node squeezes a film,
all made here from seeds: no download, reproducible. The network and training loop are
the CT body-region model's (``models/body_region``), with per-image percentile
normalisation (radiographs have no units).

Scoring: held-out films (seeds from 10 000 on), one per "series" as a radiograph series
usually is, plus the fracture model's forearm and lower-leg films
(``dicom_ai_node.testing.phantoms.extremity_xr.extremity_radiograph``), right when called
either extremity (both route to the fracture model; the generator does not say which
limb).

Usage (from the repository's root)::

    python -m models.xr_body_region.train --out models/xr_body_region          # full run
    python -m models.xr_body_region.train --smoke --out /tmp/xr-body-region    # < 60 s
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicom_ai_node.domain import BodyPart
from dicom_ai_node.testing.phantoms.extremity_xr import extremity_radiograph
from dicom_ai_node.testing.phantoms.region_xr import XR_REGIONS, region_radiograph
from models._training import record
from models.body_region import train as ct_region
from models.body_region.net import RegionNet

TEST_SEED_BASE = 10_000
SERIES_ACCURACY_MIN = 0.95
LIMBS = {XR_REGIONS.index(BodyPart.UPPER_EXTREMITY), XR_REGIONS.index(BodyPart.LOWER_EXTREMITY)}
ACCEPTANCE = {"series_accuracy_min": SERIES_ACCURACY_MIN}


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    films_per_region: int = 2500
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    eval_films_per_region: int = 40
    eval_fracture_films: int = 20

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(
            seed=seed,
            films_per_region=120,
            steps=60,
            eval_films_per_region=4,
            eval_fracture_films=2,
        )


def make_net() -> RegionNet:
    """The CT body-region network with per-image percentile normalisation."""
    return RegionNet(len(XR_REGIONS), percentile=True)


def crop(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A film cut to a random aspect ratio (3:4 to 4:3), as detectors and cassettes are."""
    keep = int(film.shape[0] * rng.uniform(0.75, 1.0))
    start = int(rng.integers(0, film.shape[0] - keep + 1))
    return film[start : start + keep] if rng.random() < 0.5 else film[:, start : start + keep]


def train(cfg: Config, data: tuple[Tensor, Tensor]) -> RegionNet:
    """The CT body-region model's training of :func:`make_net`."""
    return ct_region.train(cfg, data, make=make_net)


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(cfg.seed)
    images: list[Tensor] = []
    labels: list[int] = []
    for index, region in enumerate(XR_REGIONS):
        for _ in range(cfg.films_per_region):
            size = int(rng.choice([128, 160, 192, 256]))
            film = crop(region_radiograph(region, size, rng), rng)
            images.append(ct_region.resize(film[None]))
            labels.append(index)
    return torch.cat(images), torch.tensor(labels)


def evaluate(module: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    rng = np.random.default_rng(TEST_SEED_BASE)
    per_region: dict[str, dict[str, float]] = {}
    right = total = 0

    def score(name: str, hits: int, count: int) -> None:
        nonlocal right, total
        per_region[name] = {"series": count, "accuracy": hits / max(1, count)}
        right, total = right + hits, total + count

    for index, region in enumerate(XR_REGIONS):
        hits = 0
        for _ in range(cfg.eval_films_per_region):
            film = crop(region_radiograph(region, int(rng.choice([256, 512])), rng), rng)
            hits += ct_region.classify_series(module, film[None])[0] == index
        score(region.value, hits, cfg.eval_films_per_region)
    hits = 0
    for k in range(cfg.eval_fracture_films):
        seed = np.random.default_rng(TEST_SEED_BASE + 5000 + k)
        film = extremity_radiograph(256, seed, fracture=k % 2 == 1)
        hits += ct_region.classify_series(module, film.image[None])[0] in LIMBS
    score("UPPER or LOWER_EXTREMITY (fracture-model films)", hits, cfg.eval_fracture_films)
    return {"series_accuracy": right / total, "series": total, "per_region": per_region}


def main(argv: list[str] | None = None) -> int:
    return record.main(argv, sys.modules[__name__], export=record.export_scripted)


if __name__ == "__main__":
    sys.exit(main())
