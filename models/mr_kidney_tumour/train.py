"""Train the built-in MR kidney and kidney-tumour model on generated phantoms.

The CT kidney model's recipe (``models/ct_kidney_tumour/train.py``: the shared 2-D UNet
with three classes, the shared loss and schedule, its phantom geometry and scoring) on
MR: the phantoms are ``dicom_ai_node.testing.phantoms.kidney_mr.kidney_mr_phantom`` (the
CT kidney anatomy with one random MR look per series, the parenchyma and the tumour each
given their own contrast), scaled as the node scales MR (``preprocess.intensity =
"percentile"``: the series' 1st..99th percentile to 0..1), made here from seeds: no
download, reproducible. Scoring runs the runner's whole path on held-out phantoms
(seeds from 10 000) at full resolution.

Usage (from the repository's root)::

    python -m models.mr_kidney_tumour.train --out models/mr_kidney_tumour   # full run
    python -m models.mr_kidney_tumour.train --smoke --out /tmp/mr-kidney    # < 60 s check
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicom_ai_node.testing.phantoms.kidney_mr import kidney_mr_phantom
from models._training import record
from models._training.blocks import UNet
from models._training.loop import fit, percentile_scaled, resize_input, slice_batch, soft_targets
from models.ct_kidney_tumour import train as ct_kidney

Config = ct_kidney.Config
TEST_SEED_BASE = ct_kidney.TEST_SEED_BASE
INPUT_SIZE, CLASSES = ct_kidney.INPUT_SIZE, ct_kidney.CLASSES
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
KIDNEY_DICE_MIN = 0.8
TUMOUR_DICE_MIN = 0.5
TUMOUR_VOLUME_ERROR_MAX_PCT = 45.0
ACCEPTANCE = {
    "kidney_dice_min": KIDNEY_DICE_MIN,
    "tumour_dice_min": TUMOUR_DICE_MIN,
    "tumour_volume_error_max_abs_pct": TUMOUR_VOLUME_ERROR_MAX_PCT,
}


def make_training_set(cfg: Any) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for seed in range(cfg.train_phantoms):
        size, spacing = ct_kidney.geometry(seed, 256)
        ph = kidney_mr_phantom(cfg.slices_per_phantom, size, spacing, seed)
        keep = ph.labels.reshape(len(ph.labels), -1).any(axis=1)  # slices through a kidney
        keep |= np.random.default_rng(seed).random(len(keep)) < 0.15  # and some without
        xs.append(resize_input(percentile_scaled(ph.hu.astype(np.float32))[keep], INPUT_SIZE))
        ys.append(soft_targets(ph.labels[keep], CLASSES, INPUT_SIZE))
    return torch.cat(xs), torch.cat(ys)


def train(cfg: Any, data: tuple[Tensor, Tensor]) -> UNet:
    x, y = data

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        # gain 0.9..1.1; mirrored half the time: either kidney may hold the tumour
        return slice_batch(generator, x, y, cfg.batch_size, gain=0.1, clamp=True, flip=3)

    return fit(lambda: UNet(CLASSES, window=(0.0, 1.0)), cfg, batch)


def evaluate(module: torch.nn.Module, manifest: Any, cfg: Any) -> dict[str, Any]:
    """The CT kidney model's scoring on held-out MR phantoms, scaled as the node does."""

    def draw(
        seed: int, size: int, spacing: tuple[float, float, float], tumour: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        ph = kidney_mr_phantom(40, size, spacing, seed, tumour=tumour)
        return percentile_scaled(ph.hu.astype(np.float32)), ph.labels

    result: dict[str, Any] = ct_kidney.evaluate(module, cfg, draw)
    return result


def main(argv: list[str] | None = None) -> int:
    return record.main(argv, sys.modules[__name__], postprocess=True)


if __name__ == "__main__":
    sys.exit(main())
