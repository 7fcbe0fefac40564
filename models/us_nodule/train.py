"""Train the built-in ultrasound nodule model (thyroid and breast nodules on B-mode).

The network is the lung model's 2-D UNet (``models/ct_chest_lungs/net.py``) with three
classes: background, thyroid gland, nodule. Its input is the stored 8-bit display value
scaled to 0..1 (``preprocess.intensity_range = [0, 255]`` in ``model.toml``), at 160x160
as the node's runner resizes it (area), whatever the image's own size and frame.
Loss, schedule and export are the lung model's (``models/ct_chest_lungs/train.py``); the
images are ``dicom_ai_node.us_phantoms.ultrasound_image`` drawn here from seeds: no
download, reproducible.

Scoring runs the runner's path on held-out images (seeds from 10 000) and the node's
post-processing rules: thyroid Dice, nodule sensitivity (long axis 5 mm or more) and false
positives per image, and for found nodules the error of the long and short axis and
whether "taller than wide" agrees with the truth.

Usage::

    python models/us_nodule/train.py --out models/us_nodule            # full run
    python models/us_nodule/train.py --smoke --out /tmp/us              # < 60 s check
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

from dicom_ai_node.geometry import caliper_axes_mm, components  # noqa: E402
from dicom_ai_node.infer.tasks.network import bf16_supported  # noqa: E402
from dicom_ai_node.provenance import run_record  # noqa: E402
from dicom_ai_node.testing.phantoms.ultrasound import GLAND, NODULE, ultrasound_image  # noqa: E402

_spec = importlib.util.spec_from_file_location("lung_train", LUNGS / "train.py")
assert _spec is not None and _spec.loader is not None
lung_train = importlib.util.module_from_spec(_spec)
sys.modules["lung_train"] = lung_train  # dataclasses look their module up there
_spec.loader.exec_module(lung_train)

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
    x = lung_train.resize_input(stored(us.image)[None], INPUT_SIZE)
    y = lung_train.soft_targets(us.labels[None], CLASSES, INPUT_SIZE)
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


def train(cfg: Config, x: Tensor, y: Tensor) -> LungUNet:
    torch.manual_seed(cfg.seed)
    model = LungUNet(classes=CLASSES)
    model.hu_min, model.hu_max = 0.0, 1.0
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    weight = torch.tensor([1.0, 1.0, NODULE_WEIGHT])
    model.train()
    started = time.perf_counter()
    for step in range(cfg.steps):
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=gen)
        gain = 1 + 0.15 * (2 * torch.rand(cfg.batch_size, 1, 1, 1, generator=gen) - 1)
        xb, yb = (x[idx] * gain).clamp(0.0, 1.0), y[idx].to(torch.float32) / 255
        if torch.rand((), generator=gen) < 0.5:  # either side of the neck, either probe way
            xb, yb = torch.flip(xb, dims=(3,)), torch.flip(yb, dims=(3,))
        for group in opt.param_groups:
            group["lr"] = lung_train.lr_at(step, cfg)
        # bf16 autocast where the CPU has it natively (2.4x faster steps; 10x slower when
        # emulated), and the node runs the model so
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_supported()):
            logits = model(xb.contiguous(memory_format=torch.channels_last))
        loss = lung_train.loss_fn(logits.float(), yb, weight)
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
        dices = [_dice(p, true) for p in found]
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
        pred = lung_train.segment(module, stored(us.image)[None], size=INPUT_SIZE)[0]
        case: dict[str, Any] = {"seed": seed, "organ": us.organ}
        if us.organ == "thyroid":
            case["gland_dice"] = _dice(pred == GLAND, us.labels == GLAND)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s) for CI")
    args = parser.parse_args(argv)
    cfg = Config.smoke(args.seed) if args.smoke else Config(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = make_training_set(cfg)
    print(f"training set: {len(x)} images in {time.perf_counter() - started:.1f} s", flush=True)
    model = train(cfg, x, y)
    lung_train.export(model, args.out / "model.pt")
    module = torch.jit.load(str(args.out / "model.pt"))  # score what ships
    metrics = evaluate(module, cfg)
    elapsed = time.perf_counter() - started
    record = {
        **run_record(
            "us-nodule",
            "models/us_nodule/train.py",
            argv or sys.argv[1:],
            smoke=args.smoke,
            config=asdict(cfg),
        ),
        "parameters": count_parameters(model),
        "training_seconds": round(elapsed, 1),
        "held_out": metrics,
        "acceptance": {
            "gland_dice_mean_min": GLAND_DICE_MEAN_MIN,
            "gland_dice_floor": GLAND_DICE_FLOOR,
            "sensitivity_min": SENSITIVITY_MIN,
            "false_positives_per_image_max": FALSE_POSITIVES_MAX,
            "long_axis_error_max_pct": LONG_AXIS_ERROR_MAX_PCT,
            "min_instance_mm2": MIN_AREA_MM2,
        },
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(metrics["summary"], indent=2))
    print(f"done in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
