"""Train the built-in body-region classifier on generated CT slices; write TorchScript weights.

Training data: axial slices of the head, neck, chest, abdomen and pelvis from
``dicom_ai_node.region_phantoms`` (randomised ellipse anatomy, field of view, position,
rotation, noise, blur) plus slices of the chest phantoms of the lung model
(``dicom_ai_node.phantoms``), all made here from seeds: no download, reproducible.
Each slice is drawn at 96 to 192 pixels and area-resized to 64x64, as the node does.

Scoring (held-out seeds from 10 000 on, never trained on) is per series, as the node
uses the model: three slices at 25, 50 and 75 % of a series, softmax averaged.

Usage::

    python models/body_region/train.py --out models/body_region          # full run
    python models/body_region/train.py --smoke --out /tmp/body-region    # < 60 s check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from net import CLASSES, INPUT_SIZE, RegionNet, count_parameters  # noqa: E402

from dicom_ai_node.domain import BodyPart  # noqa: E402
from dicom_ai_node.provenance import run_record  # noqa: E402
from dicom_ai_node.testing.phantoms.chest_ct import chest_ct_phantom  # noqa: E402
from dicom_ai_node.testing.phantoms.region_ct import REGIONS, region_ct, region_slice  # noqa: E402

TEST_SEED_BASE = 10_000
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
SERIES_ACCURACY_MIN = 0.95
assert tuple(r.value for r in REGIONS) == CLASSES


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    slices_per_region: int = 3000
    chest_phantoms: int = 40
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
            steps=60,
            eval_series_per_region=4,
            eval_chest_phantoms=1,
        )


def resize(hu: np.ndarray | Tensor) -> Tensor:
    """(N, H, W) HU -> (N, 1, 64, 64) float32, area interpolation (the node's own step)."""
    x = torch.as_tensor(np.asarray(hu, dtype=np.float32)).unsqueeze(1)
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")


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
    return torch.cat(images), torch.tensor(labels)


def train(
    cfg: Any, x: Tensor, y: Tensor, log: bool = True, make: Callable[[], RegionNet] = RegionNet
) -> RegionNet:
    """Train ``make()`` on (x, y); ``cfg`` gives seed, steps, batch_size and lr."""
    torch.manual_seed(cfg.seed)
    model = make()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        for group in optimiser.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, len(x), (cfg.batch_size,), generator=generator)
        batch = x[pick]
        if torch.rand((), generator=generator) < 0.5:
            batch = torch.flip(batch, dims=(3,))  # left-right mirror: regions are symmetric
        if torch.rand((), generator=generator) < 0.25:
            batch = torch.flip(batch, dims=(2,))  # prone patients: anterior at the bottom
        if torch.rand((), generator=generator) < 0.3:  # a zoomed reconstruction
            keep = int(INPUT_SIZE * (0.5 + 0.5 * float(torch.rand((), generator=generator))))
            start = (INPUT_SIZE - keep) // 2
            crop = batch[:, :, start : start + keep, start : start + keep]
            batch = F.interpolate(crop, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear")
        loss = F.cross_entropy(model(batch), y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if log and (step % 100 == 0 or step == cfg.steps - 1):
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.5f}", flush=True)
    return model.eval()


def export(model: RegionNet, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(model), str(path))


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
    return {"series_accuracy": right / total, "series": total, "per_region": per_region}


def run(
    argv: list[str] | None,
    *,
    doc: str,
    name: str,
    config: Any,
    make_training_set: Callable[[Any], tuple[Tensor, Tensor]],
    train: Callable[[Any, Tensor, Tensor], nn.Module],
    evaluate: Callable[[torch.nn.Module, Any], dict[str, Any]],
    acceptance: dict[str, float],
) -> int:
    """A body-region training script's command line: train, export, score what ships,
    write ``metrics.json``; shared by the CT, MR and radiograph scripts."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s) for CI")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = config.smoke(args.seed) if args.smoke else config(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = make_training_set(cfg)
    print(f"training set: {len(x)} slices in {time.perf_counter() - started:.1f} s", flush=True)
    model = train(cfg, x, y)
    export(model, args.out / "model.pt")
    module = torch.jit.load(str(args.out / "model.pt"))  # score what ships
    metrics = evaluate(module, cfg)
    elapsed = time.perf_counter() - started
    folder = name.replace("-", "_")
    record = {
        **run_record(
            name,
            f"models/{folder}/train.py",
            argv or sys.argv[1:],
            smoke=args.smoke,
            config=asdict(cfg),
        ),
        "parameters": count_parameters(model),
        "training_seconds": round(elapsed, 1),
        "held_out": metrics,
        "acceptance": acceptance,
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    print(f"done in {elapsed:.1f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(
        argv,
        doc=__doc__ or "",
        name="body-region",
        config=Config,
        make_training_set=make_training_set,
        train=train,
        evaluate=evaluate,
        acceptance={"series_accuracy_min": SERIES_ACCURACY_MIN},
    )


if __name__ == "__main__":
    sys.exit(main())
