"""Train the built-in MR kidney and kidney-tumour model on generated phantoms.

The CT kidney model's recipe (``models/ct_kidney_tumour/train.py``: the lung model's 2-D
UNet with three classes, its loss, schedule, phantom geometry and scoring) on MR: the
phantoms are ``dicom_ai_node.mr_region_phantoms.kidney_mr_phantom`` (the CT kidney
anatomy with one random MR look per series, the parenchyma and the tumour each given
their own contrast), scaled as the node scales MR (``preprocess.intensity =
"percentile"``: the series' 1st..99th percentile to 0..1), made here from seeds: no
download, reproducible. Scoring runs the runner's whole path on held-out phantoms
(seeds from 10 000) at full resolution.

Usage::

    python models/mr_kidney_tumour/train.py --out models/mr_kidney_tumour   # full run
    python models/mr_kidney_tumour/train.py --smoke --out /tmp/mr-kidney    # < 60 s check
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
LUNGS = HERE.parent / "ct_chest_lungs"
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(LUNGS))

from net import LungUNet  # noqa: E402  (the lung model's UNet)

from dicom_ai_node.infer.tasks.segment import volume_percentiles  # noqa: E402
from dicom_ai_node.testing.phantoms.kidney_mr import kidney_mr_phantom  # noqa: E402


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lung_train = _load("lung_train", LUNGS / "train.py")
kidney_train = _load("kidney_train", HERE.parent / "ct_kidney_tumour" / "train.py")
Config = kidney_train.Config
TEST_SEED_BASE = kidney_train.TEST_SEED_BASE
INPUT_SIZE, CLASSES = kidney_train.INPUT_SIZE, kidney_train.CLASSES
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
KIDNEY_DICE_MIN = 0.8
TUMOUR_DICE_MIN = 0.5
TUMOUR_VOLUME_ERROR_MAX_PCT = 45.0


def scaled(image: np.ndarray) -> np.ndarray:
    """The series scaled as the node scales it: 1st..99th percentile -> 0..1."""
    low, high = volume_percentiles(image)
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def make_training_set(cfg: Any) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for seed in range(cfg.train_phantoms):
        size, spacing = kidney_train.geometry(seed, 256)
        ph = kidney_mr_phantom(cfg.slices_per_phantom, size, spacing, seed)
        keep = ph.labels.reshape(len(ph.labels), -1).any(axis=1)  # slices through a kidney
        keep |= np.random.default_rng(seed).random(len(keep)) < 0.15  # and some without
        xs.append(lung_train.resize_input(scaled(ph.hu.astype(np.float32))[keep], INPUT_SIZE))
        ys.append(lung_train.soft_targets(ph.labels[keep], CLASSES, INPUT_SIZE))
    return torch.cat(xs), torch.cat(ys)


def train(cfg: Any, x: Tensor, y: Tensor) -> LungUNet:
    torch.manual_seed(cfg.seed)
    model = LungUNet(classes=CLASSES)
    model.hu_min, model.hu_max = 0.0, 1.0
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    started = time.perf_counter()
    for step in range(cfg.steps):
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=gen)
        gain = 1 + 0.1 * (2 * torch.rand(cfg.batch_size, 1, 1, 1, generator=gen) - 1)
        xb, yb = (x[idx] * gain).clamp(0.0, 1.0), y[idx].to(torch.float32) / 255
        if torch.rand((), generator=gen) < 0.5:  # either kidney may hold the tumour
            xb, yb = torch.flip(xb, dims=(3,)), torch.flip(yb, dims=(3,))
        for group in opt.param_groups:
            group["lr"] = lung_train.lr_at(step, cfg)
        loss = lung_train.loss_fn(model(xb.contiguous(memory_format=torch.channels_last)), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            print(
                f"step {step:5d} loss {loss.item():.4f} {time.perf_counter() - started:7.1f}s",
                flush=True,
            )
    return model.eval()


def evaluate(module: torch.nn.Module, manifest: Any, cfg: Any) -> dict[str, Any]:
    """The CT kidney model's scoring on held-out MR phantoms, scaled as the node does."""

    def draw(
        seed: int, size: int, spacing: tuple[float, float, float], tumour: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        ph = kidney_mr_phantom(40, size, spacing, seed, tumour=tumour)
        return scaled(ph.hu.astype(np.float32)), ph.labels

    result: dict[str, Any] = kidney_train.evaluate(module, cfg, draw)
    return result


def main(argv: list[str] | None = None) -> int:
    return int(
        lung_train.run_scored(
            argv,
            doc=__doc__,
            folder=HERE,
            config=Config,
            make_training_set=make_training_set,
            train=train,
            evaluate=evaluate,
            acceptance={
                "kidney_dice_min": KIDNEY_DICE_MIN,
                "tumour_dice_min": TUMOUR_DICE_MIN,
                "tumour_volume_error_max_abs_pct": TUMOUR_VOLUME_ERROR_MAX_PCT,
            },
        )
    )


if __name__ == "__main__":
    sys.exit(main())
