"""Train the built-in CT kidney and kidney-tumour model on generated phantoms.

The network is the lung model's 2-D UNet (``models/ct_chest_lungs/net.py``, three
classes: background, kidney, tumour) with the CT window set to -200..400 HU, trained
with the lung model's loss (soft cross-entropy plus soft Dice), schedule and export
(``models/ct_chest_lungs/train.py``), on slices of ``dicom_ai_node.region_phantoms.
kidney_ct_phantom`` made here from seeds: no download, reproducible. Slices go through
the node's runner preprocessing (area resize to 128x128); scoring runs the runner's
whole path on held-out phantoms (seeds from 10 000) at full resolution.

Usage::

    python models/ct_kidney_tumour/train.py --out models/ct_kidney_tumour   # full run
    python models/ct_kidney_tumour/train.py --smoke --out /tmp/kidney       # < 60 s check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
LUNGS = HERE.parent / "ct_chest_lungs"
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(LUNGS))

from net import LungUNet, count_parameters  # noqa: E402  (the lung model's UNet)

from dicom_ai_node.provenance import run_record  # noqa: E402
from dicom_ai_node.testing.phantoms.kidney_ct import KIDNEY, TUMOUR, kidney_ct_phantom  # noqa: E402

_spec = importlib.util.spec_from_file_location("lung_train", LUNGS / "train.py")
assert _spec is not None and _spec.loader is not None
lung_train = importlib.util.module_from_spec(_spec)
sys.modules["lung_train"] = lung_train  # dataclasses look their module up there
_spec.loader.exec_module(lung_train)

TEST_SEED_BASE = 10_000
#: the network's input size and classes (background, kidney, tumour): the lung model's
#: network, at the size and class count of this model
INPUT_SIZE = 128
CLASSES = 3
HU_MIN, HU_MAX = -200.0, 400.0
LABELS = {"kidney": KIDNEY, "tumour": TUMOUR}
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
KIDNEY_DICE_MIN = 0.85
TUMOUR_DICE_MIN = 0.6
TUMOUR_VOLUME_ERROR_MAX_PCT = 35.0


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_phantoms: int = 160
    slices_per_phantom: int = 24
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    eval_phantoms: int = 8

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(seed=seed, train_phantoms=4, slices_per_phantom=12, steps=25, eval_phantoms=1)


def geometry(seed: int, size: int | None = None) -> tuple[int, tuple[float, float, float]]:
    """Matrix and spacing of phantom ``seed``: 256 pixels of 1.2-1.8 mm (or 512 of half
    that), 2.5-5 mm slices. Training uses 256: the network sees 128x128 either way."""
    rng = np.random.default_rng([seed, 5])
    size = size or int(rng.choice([256, 512]))
    pixel = float(rng.uniform(1.2, 1.8)) * 256 / size
    return size, (float(rng.uniform(2.5, 5.0)), pixel, pixel)


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for seed in range(cfg.train_phantoms):
        size, spacing = geometry(seed, 256)
        ph = kidney_ct_phantom(cfg.slices_per_phantom, size, spacing, seed)
        keep = ph.labels.reshape(len(ph.labels), -1).any(axis=1)  # slices through a kidney
        keep |= np.random.default_rng(seed).random(len(keep)) < 0.15  # and some without
        xs.append(lung_train.resize_input(ph.hu[keep], INPUT_SIZE))
        ys.append(lung_train.soft_targets(ph.labels[keep], CLASSES, INPUT_SIZE))
    return torch.cat(xs), torch.cat(ys)


def train(cfg: Config, x: Tensor, y: Tensor) -> LungUNet:
    torch.manual_seed(cfg.seed)
    model = LungUNet(classes=CLASSES)
    model.hu_min, model.hu_max = HU_MIN, HU_MAX
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    started = time.perf_counter()
    for step in range(cfg.steps):
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=gen)
        gain = 1 + 0.03 * (2 * torch.rand(cfg.batch_size, 1, 1, 1, generator=gen) - 1)
        shift = 15 * (2 * torch.rand(cfg.batch_size, 1, 1, 1, generator=gen) - 1)
        xb, yb = x[idx] * gain + shift, y[idx].to(torch.float32) / 255
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


def score(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict[str, dict[str, float]]:
    out = {}
    for name, value in LABELS.items():
        p, t = pred == value, truth == value
        n_p, n_t = int(p.sum()), int(t.sum())
        if n_t == 0:
            out[name] = {"present": 0.0, "false_positive_ml": n_p * voxel_ml}
            continue
        inter = int(np.logical_and(p, t).sum())
        out[name] = {
            "present": 1.0,
            "dice": 2 * inter / max(1, n_p + n_t),
            "volume_ml": n_p * voxel_ml,
            "true_volume_ml": n_t * voxel_ml,
            "volume_error_pct": 100 * (n_p - n_t) / n_t,
        }
    return out


def evaluate(
    module: torch.nn.Module,
    cfg: Config,
    draw: Callable[[int, int, tuple[float, float, float], bool], tuple[np.ndarray, np.ndarray]]
    | None = None,
) -> dict[str, Any]:
    """Score held-out phantoms (seeds from 10 000; every fifth without a tumour).

    ``draw(seed, size, spacing, tumour)`` returns the network's input volume and the
    truth; by default the CT phantom in HU (the MR model passes its own).
    """
    cases = []
    for i in range(cfg.eval_phantoms):
        seed = TEST_SEED_BASE + i
        size, spacing = geometry(seed)
        if draw is None:
            ph = kidney_ct_phantom(40, size, spacing, seed, tumour=i % 5 != 4)
            image, truth = ph.hu, ph.labels
        else:
            image, truth = draw(seed, size, spacing, i % 5 != 4)
        pred = lung_train.segment(module, image, size=INPUT_SIZE)
        case: dict[str, Any] = {"seed": seed, "size": size, "spacing_mm": list(spacing)}
        case.update(score(pred, truth, float(np.prod(spacing)) / 1000))
        cases.append(case)
    kidney = [c["kidney"]["dice"] for c in cases]
    tumours = [c["tumour"] for c in cases if c["tumour"]["present"]]
    empty = [c["tumour"]["false_positive_ml"] for c in cases if not c["tumour"]["present"]]
    return {
        "cases": cases,
        "summary": {
            "kidney_dice_mean": float(np.mean(kidney)),
            "kidney_dice_min": float(np.min(kidney)),
            "tumour_dice_mean": float(np.mean([t["dice"] for t in tumours])) if tumours else None,
            "tumour_dice_min": float(np.min([t["dice"] for t in tumours])) if tumours else None,
            "tumour_volume_error_pct_max_abs": float(
                np.max([abs(t["volume_error_pct"]) for t in tumours])
            )
            if tumours
            else None,
            "false_tumour_ml_without_tumour": [float(v) for v in empty],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s) for CI")
    args = parser.parse_args(argv)
    cfg = Config.smoke(args.seed) if args.smoke else Config(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = make_training_set(cfg)
    print(f"training set: {len(x)} slices in {time.perf_counter() - started:.1f} s", flush=True)
    model = train(cfg, x, y)
    lung_train.export(model, args.out / "model.pt")
    module = torch.jit.load(str(args.out / "model.pt"))  # score what ships
    metrics = evaluate(module, cfg)
    elapsed = time.perf_counter() - started
    record = {
        **run_record(
            "ct-kidney-tumour",
            "models/ct_kidney_tumour/train.py",
            argv or sys.argv[1:],
            smoke=args.smoke,
            config=asdict(cfg),
        ),
        "parameters": count_parameters(model),
        "training_seconds": round(elapsed, 1),
        "held_out": metrics,
        "acceptance": {
            "kidney_dice_min": KIDNEY_DICE_MIN,
            "tumour_dice_min": TUMOUR_DICE_MIN,
            "tumour_volume_error_max_abs_pct": TUMOUR_VOLUME_ERROR_MAX_PCT,
        },
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(metrics["summary"], indent=2))
    print(f"done in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
