"""Train the built-in brain MR model (brain and ventricles, for an atrophy index).

The network is the lung model's 2-D UNet (``models/ct_chest_lungs/net.py``, three
classes: background, brain parenchyma, ventricles) with its input window set to 0..1:
MR has no calibrated unit, so the node scales each series between its 1st and 99th
percentile (``preprocess.intensity = "percentile"``, ``infer/slices.py``) and so does
this script. Loss, schedule and export are the lung model's
(``models/ct_chest_lungs/train.py``); the images are axial slices of
``dicom_ai_node.mr_phantoms.brain_mr_phantom`` made here from seeds: no download,
reproducible. Scoring runs the runner's path on held-out phantoms (seeds from 10 000):
Dice of both labels and the error of the ventricle-to-brain ratio (VBR).

Usage::

    python models/mr_brain_atrophy/train.py --out models/mr_brain_atrophy   # full run
    python models/mr_brain_atrophy/train.py --smoke --out /tmp/brain        # < 60 s check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
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

from dicom_ai_node.infer.slices import volume_percentiles  # noqa: E402
from dicom_ai_node.mr_phantoms import BRAIN, VENTRICLES, brain_mr_phantom  # noqa: E402
from dicom_ai_node.provenance import run_record  # noqa: E402

_spec = importlib.util.spec_from_file_location("lung_train", LUNGS / "train.py")
assert _spec is not None and _spec.loader is not None
lung_train = importlib.util.module_from_spec(_spec)
sys.modules["lung_train"] = lung_train  # dataclasses look their module up there
_spec.loader.exec_module(lung_train)

TEST_SEED_BASE = 10_000
INPUT_SIZE = 128
CLASSES = 3
LABELS = {"brain": BRAIN, "ventricles": VENTRICLES}
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
BRAIN_DICE_MIN = 0.9
VENTRICLE_DICE_MIN = 0.8
VBR_ERROR_MAX_PCT = 20.0


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_phantoms: int = 160
    slices_per_phantom: int = 20
    steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    eval_phantoms: int = 10

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(seed=seed, train_phantoms=4, slices_per_phantom=12, steps=25, eval_phantoms=1)


def scaled(image: np.ndarray) -> np.ndarray:
    """The series scaled as the node scales it: 1st..99th percentile -> 0..1."""
    low, high = volume_percentiles(image)
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for seed in range(cfg.train_phantoms):
        ph = brain_mr_phantom(cfg.slices_per_phantom, 192, seed)
        xs.append(lung_train.resize_input(scaled(ph.image), INPUT_SIZE))
        ys.append(lung_train.soft_targets(ph.labels, CLASSES, INPUT_SIZE))
    return torch.cat(xs), torch.cat(ys)


def train(cfg: Config, x: Tensor, y: Tensor) -> LungUNet:
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
        if torch.rand((), generator=gen) < 0.5:
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


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def evaluate(module: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    cases = []
    for i in range(cfg.eval_phantoms):
        seed = TEST_SEED_BASE + i
        ph = brain_mr_phantom(28, int(np.random.default_rng(seed).choice([192, 256])), seed)
        pred = lung_train.segment(module, scaled(ph.image), size=INPUT_SIZE)
        vbr = float(np.count_nonzero(pred == VENTRICLES) / max(1, np.count_nonzero(pred == BRAIN)))
        cases.append(
            {
                "seed": seed,
                "atrophy": round(ph.atrophy, 3),
                "brain_dice": _dice(pred == BRAIN, ph.labels == BRAIN),
                "ventricle_dice": _dice(pred == VENTRICLES, ph.labels == VENTRICLES),
                "vbr": vbr,
                "true_vbr": ph.ventricle_to_brain_ratio,
                "vbr_error_pct": 100
                * (vbr - ph.ventricle_to_brain_ratio)
                / ph.ventricle_to_brain_ratio,
            }
        )
    return {
        "cases": cases,
        "summary": {
            "brain_dice_min": min(c["brain_dice"] for c in cases),
            "ventricle_dice_min": min(c["ventricle_dice"] for c in cases),
            "ventricle_dice_mean": float(np.mean([c["ventricle_dice"] for c in cases])),
            "vbr_error_pct_max_abs": max(abs(c["vbr_error_pct"]) for c in cases),
            "vbr_vs_atrophy": [[c["atrophy"], round(c["vbr"], 4)] for c in cases],
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
            "mr-brain-atrophy",
            "models/mr_brain_atrophy/train.py",
            argv or sys.argv[1:],
            smoke=args.smoke,
            config=asdict(cfg),
        ),
        "parameters": count_parameters(model),
        "training_seconds": round(elapsed, 1),
        "held_out": metrics,
        "acceptance": {
            "brain_dice_min": BRAIN_DICE_MIN,
            "ventricle_dice_min": VENTRICLE_DICE_MIN,
            "vbr_error_max_abs_pct": VBR_ERROR_MAX_PCT,
        },
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(metrics["summary"], indent=2))
    print(f"done in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
