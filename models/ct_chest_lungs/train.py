"""Train the built-in CT chest lung and nodule model on generated phantoms (TorchScript).

The training data are randomised chest CT phantoms
(``dicom_ai_node.testing.phantoms.chest_ct``), made here from seeds with nodules
labelled, so the run needs no download and is reproducible. The network is the shared
2-D UNet (``net.py``, ``models/_training/blocks.py``), trained with the shared loop, loss
and schedule (``models/_training/loop.py``). Slices go through exactly the node's
TorchScript runner preprocessing: each axial slice resized to 160x160 with
``interpolate(mode="area")``; the loss uses the area-resized one-hot truth (soft targets,
which teach partial-volume fractions and keep the volumes right after the runner
upsamples the logits bilinearly). Scoring runs the runner's whole path on held-out
phantoms at full resolution, including the node's nodule post-processing
(:func:`dicom_ai_node.infer.findings.lesions.segmentation_output` with this folder's
manifest): each true nodule counts as found when a reported nodule overlaps it.

Usage (from the repository's root)::

    python -m models.ct_chest_lungs.train --out models/ct_chest_lungs   # full run
    python -m models.ct_chest_lungs.train --smoke --out /tmp/lungs      # < 60 s check

Train seeds are ``0 .. N-1``; held-out test seeds start at 10 000 and are never trained on.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import components
from dicom_ai_node.infer.findings.lesions import segmentation_output
from dicom_ai_node.infer.manifest import ModelManifest, load_manifest
from dicom_ai_node.provenance import run_record
from dicom_ai_node.testing.phantoms.chest_ct import LEFT_LUNG, NODULE, RIGHT_LUNG, chest_ct_phantom
from models._training.blocks import UNet, count_parameters
from models._training.loop import fit, resize_input, slice_batch, soft_targets
from models._training.record import export_frozen, write_metrics
from models._training.scoring import dice, segment, volume_scores
from models.ct_chest_lungs.net import INPUT_SIZE, NUM_CLASSES, lung_unet

HERE = Path(__file__).resolve().parent
TEST_SEED_BASE = 10_000
LUNGS = {"right": RIGHT_LUNG, "left": LEFT_LUNG}
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
DICE_MIN = 0.95
VOLUME_ERROR_MAX_PCT = 5.0
#: nodules of at least this equivalent diameter must be found (sensitivity below)
NODULE_MIN_MM = 10.0
NODULE_SENSITIVITY_MIN = 0.8
FALSE_POSITIVES_PER_SCAN_MAX = 1.0
#: nodules per lung in training and held-out phantoms (Poisson mean): more than the
#: phantom's default, so that every batch sees some
NODULES_PER_LUNG = 1.5
#: the nodule class weighs this much more in the cross-entropy (it is rare)
NODULE_WEIGHT = 3.0


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_phantoms: int = 240
    slices_per_phantom: int = 24
    steps: int = 2200
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    eval_phantoms: int = 8
    eval_rows: int = 512
    eval_pixel_mm: tuple[float, float] = (0.6, 0.8)
    eval_slices: tuple[int, int] = (100, 300)
    eval_slice_mm: tuple[float, float] = (1.0, 3.0)
    workers: int = 2

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(
            seed=seed,
            train_phantoms=4,
            slices_per_phantom=12,
            steps=25,
            batch_size=8,
            eval_phantoms=1,
            eval_rows=256,
            eval_pixel_mm=(1.2, 1.6),
            eval_slices=(30, 30),
            eval_slice_mm=(3.0, 5.0),
        )


# ---------------------------------------------------------------- data
def train_geometry(seed: int, slices: int) -> tuple[int, int, tuple[float, float, float]]:
    """Matrix and spacing of training phantom ``seed``: mostly 512 at 0.5-1.0 mm.

    Fields of view run from 256 to about 720 mm (most 256-512 mm, as in chest CT).
    """
    rng = np.random.default_rng([seed, 7])
    r = rng.random()
    if r < 0.6:
        size, pixel = 512, rng.uniform(0.5, 1.0)
    elif r < 0.7:
        size, pixel = 512, rng.uniform(1.0, 1.4)
    elif r < 0.85:
        size, pixel = 256, rng.uniform(1.0, 2.6)
    else:
        size, pixel = 384, rng.uniform(0.7, 1.3)
    return slices, size, (float(rng.uniform(1.0, 5.0)), float(pixel), float(pixel))


def eval_geometry(seed: int, cfg: Config) -> tuple[int, int, tuple[float, float, float]]:
    """Matrix and spacing of held-out phantom ``seed`` (the quality-target geometry)."""
    rng = np.random.default_rng([seed, 11])
    slices = int(rng.integers(cfg.eval_slices[0], cfg.eval_slices[1] + 1))
    pixel = float(rng.uniform(*cfg.eval_pixel_mm))
    return slices, cfg.eval_rows, (float(rng.uniform(*cfg.eval_slice_mm)), pixel, pixel)


def _make_training_phantom(args: tuple[int, int]) -> tuple[Tensor, Tensor]:
    seed, slices = args
    torch.set_num_threads(1)
    n, size, spacing = train_geometry(seed, slices)
    ph = chest_ct_phantom(
        n, size, size, spacing, seed=seed, nodules_per_lung=NODULES_PER_LUNG, label_nodules=True
    )
    return resize_input(ph.hu, INPUT_SIZE), soft_targets(ph.labels, NUM_CLASSES, INPUT_SIZE)


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    """Generate the training slices (in parallel; the result does not depend on workers)."""
    jobs = [(seed, cfg.slices_per_phantom) for seed in range(cfg.train_phantoms)]
    if cfg.workers > 1:
        with concurrent.futures.ProcessPoolExecutor(cfg.workers) as pool:
            parts = list(pool.map(_make_training_phantom, jobs, chunksize=4))
    else:
        parts = [_make_training_phantom(job) for job in jobs]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ---------------------------------------------------------------- model
def class_weights() -> Tensor:
    """Cross-entropy weight of each class: nodules weigh :data:`NODULE_WEIGHT`, others 1."""
    weight = torch.ones(NUM_CLASSES)
    weight[NODULE] = NODULE_WEIGHT
    return weight


def train(cfg: Config, x: Tensor, y: Tensor, log: bool = True) -> UNet:
    """Train a fresh network on slices ``x`` (HU) with soft targets ``y`` (uint8)."""

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        # small calibration jitter: HU offset +-15, gain 0.97..1.03
        return slice_batch(generator, x, y, cfg.batch_size, gain=0.03, shift=15.0)

    return fit(lung_unet, cfg, batch, weight=class_weights(), log=log)


# ---------------------------------------------------------------- scoring
def score(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict[str, dict[str, float]]:
    """Dice and volumes per lung (nodule voxels are neither, in truth and prediction)."""
    return {name: volume_scores(pred, truth, value, voxel_ml) for name, value in LUNGS.items()}


def score_nodules(
    manifest: ModelManifest, raw: np.ndarray, hu: np.ndarray, truth: np.ndarray, spacing: Any
) -> dict[str, Any]:
    """The node's nodule report on ``raw`` (the argmax) against the true nodules.

    Each true nodule (a connected region of :data:`NODULE`, its size the diameter of a
    sphere of its volume) is found when a reported nodule overlaps it; a reported nodule
    that overlaps none is a false positive.
    """
    volume = Volume(hu.astype(np.float32), tuple(spacing), (), "", "", "")  # type: ignore[arg-type]
    output = segmentation_output(manifest, raw.copy(), volume)
    assert output.label_map is not None
    reported = {lab.value for lab in output.labels if lab.name.startswith("Nodule ")}
    voxel_mm3 = float(np.prod(spacing))
    nodules = []
    hits: set[int] = set()
    for box, mask in components(truth == NODULE):
        found = output.label_map[box][mask]
        overlapping = sorted(set(found.tolist()) & reported)
        hits.update(overlapping)
        true_mm3 = float(mask.sum()) * voxel_mm3
        entry: dict[str, Any] = {
            "diameter_mm": round((6 * true_mm3 / math.pi) ** (1 / 3), 2),
            "found": bool(overlapping),
        }
        if overlapping:
            pred = np.isin(output.label_map, overlapping)
            t = np.zeros(truth.shape, bool)
            t[box] = mask
            n_p = int(pred.sum())
            # rounded as numpy rounds a numpy float, as recorded so far
            entry["dice"] = round(np.float64(dice(pred, t)), 4)
            entry["volume_error_pct"] = round(100 * (n_p - int(mask.sum())) / int(mask.sum()), 2)
        nodules.append(entry)
    return {"nodules": nodules, "false_positives": len(reported - hits)}


def evaluate(module: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    """Score ``module`` on the held-out phantoms (seeds from 10 000) at full resolution."""
    manifest = load_manifest(HERE / "model.toml")
    cases = []
    seconds = 0.0
    n_slices = 0
    for i in range(cfg.eval_phantoms):
        seed = TEST_SEED_BASE + i
        n, size, spacing = eval_geometry(seed, cfg)
        ph = chest_ct_phantom(
            n, size, size, spacing, seed=seed, nodules_per_lung=NODULES_PER_LUNG, label_nodules=True
        )
        t0 = time.perf_counter()
        pred = segment(module, ph.hu, INPUT_SIZE)
        seconds += time.perf_counter() - t0
        n_slices += n
        voxel_ml = float(np.prod(spacing)) / 1000
        cases.append({"seed": seed, "shape": [n, size, size], "spacing_mm": list(spacing)})
        cases[-1].update(score(pred, ph.labels, voxel_ml))
        cases[-1].update(score_nodules(manifest, pred, ph.hu, ph.labels, spacing))
    summary: dict[str, Any] = {}
    for name in LUNGS:
        dice = [c[name]["dice"] for c in cases]
        err = [c[name]["volume_error_pct"] for c in cases]
        summary[name] = {
            "dice_mean": float(np.mean(dice)),
            "dice_min": float(np.min(dice)),
            "volume_error_pct_mean": float(np.mean(err)),
            "volume_error_pct_mean_abs": float(np.mean(np.abs(err))),
            "volume_error_pct_max_abs": float(np.max(np.abs(err))),
        }
    summary["nodules"] = nodule_summary(cases)
    return {
        "seeds": [c["seed"] for c in cases],
        "geometry": {
            "rows_columns": cfg.eval_rows,
            "pixel_spacing_mm": list(cfg.eval_pixel_mm),
            "slices": list(cfg.eval_slices),
            "slice_spacing_mm": list(cfg.eval_slice_mm),
            "nodules_per_lung": NODULES_PER_LUNG,
        },
        "summary": summary,
        "cases": cases,
        "inference_slices_per_s_fp32": n_slices / max(seconds, 1e-9),
    }


def nodule_summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Sensitivity by size, false positives per scan, and the accuracy of found nodules."""
    nodules = [n for c in cases for n in c["nodules"]]
    summary: dict[str, Any] = {"true_nodules": len(nodules)}
    for low, high in ((0.0, 6.0), (6.0, NODULE_MIN_MM), (NODULE_MIN_MM, 100.0)):
        group = [n for n in nodules if low <= n["diameter_mm"] < high]
        key = f"sensitivity_{low:g}_to_{high:g}_mm"
        summary[key] = (sum(n["found"] for n in group) / len(group)) if group else None
        summary[f"count_{low:g}_to_{high:g}_mm"] = len(group)
    large = [n for n in nodules if n["diameter_mm"] >= NODULE_MIN_MM]
    summary["sensitivity_at_least_min_mm"] = (
        sum(n["found"] for n in large) / len(large) if large else None
    )
    summary["false_positives_per_scan"] = sum(c["false_positives"] for c in cases) / len(cases)
    found = [n for n in nodules if n["found"]]
    summary["found_dice_median"] = float(np.median([n["dice"] for n in found])) if found else None
    summary["found_volume_error_pct_median_abs"] = (
        float(np.median(np.abs([n["volume_error_pct"] for n in found]))) if found else None
    )
    return summary


def acceptance() -> dict[str, float]:
    """The thresholds MODEL_CARD.md states and the unit tests check."""
    return {
        "dice_min": DICE_MIN,
        "volume_error_max_abs_pct": VOLUME_ERROR_MAX_PCT,
        "nodule_min_mm": NODULE_MIN_MM,
        "nodule_sensitivity_min": NODULE_SENSITIVITY_MIN,
        "false_positives_per_scan_max": FALSE_POSITIVES_PER_SCAN_MAX,
    }


def evaluate_only(out: Path | None, smoke: bool, seed: int) -> int:
    """Score ``out/model.pt`` again and rewrite the held-out part of ``out/metrics.json``."""
    if out is None:
        raise SystemExit("--evaluate-only needs --out FOLDER (with model.pt and metrics.json)")
    torch.set_num_threads(2)
    cfg = Config.smoke(seed) if smoke else Config(seed=seed)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["held_out"] = evaluate(torch.jit.load(str(out / "model.pt")), cfg)
    metrics["acceptance"] = acceptance()
    metrics["evaluated_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_metrics(out, metrics)
    print(json.dumps(metrics["held_out"]["summary"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s), for tests")
    parser.add_argument("--steps", type=int, help="override the number of training steps")
    parser.add_argument("--train-phantoms", type=int, help="override the training set size")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="score the --out folder's model.pt again (e.g. after changing the manifest's "
        "post-processing) and update its metrics.json; no training",
    )
    args = parser.parse_args(argv)
    if args.evaluate_only:
        return evaluate_only(args.out, args.smoke, args.seed)
    cfg = Config.smoke(args.seed) if args.smoke else Config(seed=args.seed)
    if args.steps is not None:
        cfg = Config(**{**asdict(cfg), "steps": args.steps})
    if args.train_phantoms is not None:
        cfg = Config(**{**asdict(cfg), "train_phantoms": args.train_phantoms})
    if args.out is None:
        import tempfile

        args.out = Path(tempfile.mkdtemp(prefix="ct_chest_lungs_"))
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    x, y = make_training_set(cfg)
    t_data = time.perf_counter() - t_start
    print(f"training set: {x.shape[0]} slices in {t_data:.1f}s")
    model = train(cfg, x, y, log=not args.smoke)
    t_train = time.perf_counter() - t_start - t_data
    export_frozen(model, args.out / "model.pt")
    module = torch.jit.load(str(args.out / "model.pt"))
    held_out = evaluate(module, cfg)
    metrics = {
        **run_record(
            "ct-chest-lungs",
            "models.ct_chest_lungs.train",
            argv if argv is not None else sys.argv[1:],
            smoke=args.smoke,
            config=asdict(cfg),
        ),
        "train_seeds": [0, cfg.train_phantoms - 1],
        "train_slices": int(x.shape[0]),
        "parameters": count_parameters(model),
        "seconds": {
            "data": round(t_data, 1),
            "train": round(t_train, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "acceptance": acceptance(),
        "held_out": held_out,
    }
    write_metrics(args.out, metrics)
    print(json.dumps(held_out["summary"], indent=2))
    print(f"wrote {args.out / 'model.pt'} and metrics.json in {metrics['seconds']['total']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
