"""Train the built-in ultrasound nodule model (thyroid and breast nodules on B-mode).

The network is the shared 2-D UNet (``models/_training/blocks.py``) with three classes:
background, thyroid gland, nodule. Its input is the stored 8-bit display value scaled to
0..1 (``preprocess.intensity_range = [0, 255]`` in ``model.toml``), at 160x160 as the
node's runner resizes it (area), whatever the image's own size and frame. Loss, schedule
and export are the shared ones (``models/_training/``); the images are
``dicom_ai_node.testing.phantoms.ultrasound.ultrasound_image`` drawn here from seeds: no
download, reproducible.

Scoring runs the runner's path on held-out images (seeds from 10 000) and the node's
post-processing rules: thyroid Dice, nodule sensitivity (long axis 5 mm or more) and false
positives per image, and for found nodules the error of the long and short axis and
whether "taller than wide" agrees with the truth.

Usage (from the repository's root)::

    python -m models.us_nodule.train --out models/us_nodule            # full run
    python -m models.us_nodule.train --smoke --out /tmp/us              # < 60 s check
"""

from __future__ import annotations

import concurrent.futures
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicom_ai_node.geometry import caliper_axes_mm, components
from dicom_ai_node.testing.phantoms.ultrasound import GLAND, NODULE, ultrasound_image
from models._training import record
from models._training.blocks import UNet
from models._training.loop import fit, resize_input, slice_batch, soft_targets
from models._training.scoring import dice, segment

TEST_SEED_BASE = 10_000
INPUT_SIZE = 160
CLASSES = 3
NODULE_WEIGHT = 3.0
#: The node's post-processing rule (model.toml ``min_instance_mm2``): smaller regions
#: are not reported.
MIN_AREA_MM2 = 8.0
#: Nodules this long or longer count for sensitivity.
MIN_LONG_AXIS_MM = 5.0
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
GLAND_DICE_MEAN_MIN = 0.8
GLAND_DICE_FLOOR = 0.6
SENSITIVITY_MIN = 0.8
FALSE_POSITIVES_MAX = 0.5
LONG_AXIS_ERROR_MAX_PCT = 20.0
ACCEPTANCE = {
    "gland_dice_mean_min": GLAND_DICE_MEAN_MIN,
    "gland_dice_floor": GLAND_DICE_FLOOR,
    "sensitivity_min": SENSITIVITY_MIN,
    "false_positives_per_image_max": FALSE_POSITIVES_MAX,
    "long_axis_error_max_pct": LONG_AXIS_ERROR_MAX_PCT,
    "min_instance_mm2": MIN_AREA_MM2,
}


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_images: int = 900
    steps: int = 1600
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    eval_images: int = 60
    workers: int = 2

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(seed=seed, train_images=24, steps=25, eval_images=4, workers=1)


def stored(image: np.ndarray) -> np.ndarray:
    """The display values as the node gets them: stored as 8 bits, scaled back to 0..1."""
    return (np.round(image * 255) / 255).astype(np.float32)


def _make(seed: int) -> tuple[Tensor, Tensor]:
    torch.set_num_threads(1)
    us = ultrasound_image(np.random.default_rng(seed))
    x = resize_input(stored(us.image)[None], INPUT_SIZE)
    y = soft_targets(us.labels[None], CLASSES, INPUT_SIZE)
    return x, y


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    """Generate the training images (in parallel; the result does not depend on workers)."""
    seeds = range(cfg.train_images)
    if cfg.workers > 1:
        with concurrent.futures.ProcessPoolExecutor(cfg.workers) as pool:
            parts = list(pool.map(_make, seeds, chunksize=16))
    else:
        parts = [_make(seed) for seed in seeds]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def train(cfg: Config, data: tuple[Tensor, Tensor]) -> UNet:
    x, y = data

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        # mirrored half the time: either side of the neck, either probe way
        return slice_batch(generator, x, y, cfg.batch_size, gain=0.15, clamp=True, flip=3)

    # bf16 autocast where the CPU has it natively, as the node runs the model
    return fit(
        lambda: UNet(CLASSES, window=(0.0, 1.0)),
        cfg,
        batch,
        weight=torch.tensor([1.0, 1.0, NODULE_WEIGHT]),
        bf16=True,
    )


def _regions(mask: np.ndarray, pixel_mm: float, min_mm2: float) -> list[np.ndarray]:
    """Full-size masks of the 8-connected regions of at least ``min_mm2``."""
    out = []
    for box, local in components(mask[None]):
        if local.sum() * pixel_mm**2 >= min_mm2:
            full = np.zeros(mask.shape, bool)
            full[box[1:]] = local[0]
            out.append(full)
    return out


def _taller(mask: np.ndarray) -> bool:
    """Whether a region spans more rows than columns (taller than wide)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return bool(np.ptp(rows) > np.ptp(cols))


def score_nodules(pred: np.ndarray, truth: np.ndarray, pixel_mm: float) -> dict[str, Any]:
    """Match predicted to true nodules (Dice >= 0.4 with one predicted region)."""
    found = _regions(pred == NODULE, pixel_mm, MIN_AREA_MM2)
    used: set[int] = set()
    nodules = []
    for true in _regions(truth == NODULE, pixel_mm, 0.0):
        long, short = caliper_axes_mm(true, pixel_mm, pixel_mm)
        dices = [dice(p, true) for p in found]
        best = int(np.argmax(dices)) if dices else -1
        row: dict[str, Any] = {"long_axis_mm": long, "short_axis_mm": short, "found": False}
        if best >= 0 and dices[best] >= 0.4:
            used.add(best)
            p_long, p_short = caliper_axes_mm(found[best], pixel_mm, pixel_mm)
            row |= {
                "found": True,
                "dice": dices[best],
                "long_axis_error_pct": 100 * (p_long - long) / long,
                "short_axis_error_pct": 100 * (p_short - short) / max(short, 1e-6),
                "taller_than_wide_agrees": _taller(found[best]) == _taller(true),
            }
        nodules.append(row)
    return {"nodules": nodules, "false_positives": len(found) - len(used)}


def evaluate(module: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    cases = []
    for i in range(cfg.eval_images):
        seed = TEST_SEED_BASE + i
        us = ultrasound_image(np.random.default_rng(seed))
        pred = segment(module, stored(us.image)[None], INPUT_SIZE)[0]
        case: dict[str, Any] = {"seed": seed, "organ": us.organ}
        if us.organ == "thyroid":
            case["gland_dice"] = dice(pred == GLAND, us.labels == GLAND)
        case |= score_nodules(pred, us.labels, us.pixel_mm)
        cases.append(case)
    return {"cases": cases, "summary": summary(cases)}


def summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Held-out figures: the model card's table and the acceptance thresholds."""
    nodules = [n for c in cases for n in c["nodules"]]
    counted = [n for n in nodules if n["long_axis_mm"] >= MIN_LONG_AXIS_MM]
    small = [n for n in nodules if n["long_axis_mm"] < MIN_LONG_AXIS_MM]
    found = [n for n in counted if n["found"]]
    glands = [c["gland_dice"] for c in cases if "gland_dice" in c]

    def median(key: str) -> float:
        return float(np.median([abs(n[key]) for n in found])) if found else float("nan")

    return {
        "images": len(cases),
        "gland_dice_mean": float(np.mean(glands)) if glands else float("nan"),
        "gland_dice_min": min(glands, default=float("nan")),
        "nodules": len(counted),
        "sensitivity": len(found) / max(1, len(counted)),
        "small_nodules_found": f"{sum(n['found'] for n in small)}/{len(small)}",
        "false_positives_per_image": sum(c["false_positives"] for c in cases) / len(cases),
        "dice_median": float(np.median([n["dice"] for n in found])) if found else float("nan"),
        "long_axis_error_pct_median_abs": median("long_axis_error_pct"),
        "short_axis_error_pct_median_abs": median("short_axis_error_pct"),
        "taller_than_wide_agreement": sum(n["taller_than_wide_agrees"] for n in found)
        / max(1, len(found)),
    }


def main(argv: list[str] | None = None) -> int:
    return record.main(argv, sys.modules[__name__], unit="images")


if __name__ == "__main__":
    sys.exit(main())
