"""Train the built-in head CTA model: intracranial arteries and aneurysm candidates.

The network is the shared 2-D UNet (``models/_training/blocks.py``, three classes:
background, artery, aneurysm) with its CT window set to -100..1200 HU (bone stays
brighter than contrast) and three input channels: it is 2.5-D, each axial slice with the
slices 3 mm below and above it (``preprocess.context_mm``, gathered as the node's runner
does, ``dicom_ai_node.infer.tasks.segment.SliceStack``), so that a small round sac,
which ends within a few mm, differs from a vessel crossing the slice, which goes on.
Trained with the shared loss (aneurysm voxels weighted more), schedule and export
(``models/_training/``) on slices of ``dicom_ai_node.testing.phantoms.head_cta.cta_phantom``
made here from seeds (a quarter of each batch from slices through an aneurysm): no
download, reproducible. Slices go through the node's runner preprocessing (area resize
to 160x160).

Scoring runs the node's path on held-out angiograms (seeds from 10 000): the runner's
resize and argmax, then the node's own post-processing with this model's
``model.toml`` (each connected candidate a label, the size and elongation rules): artery
Dice, aneurysm sensitivity (aneurysms of ``COUNTED_MM`` or more; smaller ones are listed
apart),
false positives per scan, and the long-axis error of the aneurysms found.

Usage (from the repository's root)::

    python -m models.cta_aneurysm.train --out models/cta_aneurysm    # full run
    python -m models.cta_aneurysm.train --smoke --out /tmp/cta       # < 60 s check
"""

from __future__ import annotations

import concurrent.futures
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import components
from dicom_ai_node.infer.findings.lesions import segmentation_output
from dicom_ai_node.infer.findings.measure import long_axis_mm
from dicom_ai_node.infer.tasks.segment import SliceStack
from dicom_ai_node.testing.phantoms.head_cta import ANEURYSM, ARTERY, cta_phantom
from models._training import record
from models._training.blocks import UNet
from models._training.loop import fit, resize_input, showing, slice_batch, soft_targets
from models._training.scoring import dice

TEST_SEED_BASE = 10_000
INPUT_SIZE = 160
CLASSES = 3
#: the neighbours' distance (mm), as model.toml's preprocess.context_mm
CONTEXT_MM = 3.0
#: the extra training phantoms' seeds and sac diameters (mm)
SMALL_SEED_BASE = 5_000
SMALL_MM = (4.0, 8.0)
HU_MIN, HU_MAX = -100.0, 1200.0
ANEURYSM_WEIGHT = 4.0
#: Aneurysms this long or longer count for sensitivity: the 2-D network labels smaller
#: ones as artery (MODEL_CARD.md).
COUNTED_MM = 8.0
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
ARTERY_DICE_MIN = 0.7
SENSITIVITY_MIN = 0.75
FALSE_POSITIVES_MAX = 1.0
LONG_AXIS_ERROR_MAX_PCT = 30.0
ACCEPTANCE = {
    "artery_dice_min": ARTERY_DICE_MIN,
    "sensitivity_min": SENSITIVITY_MIN,
    "false_positives_per_scan_max": FALSE_POSITIVES_MAX,
    "long_axis_error_max_pct": LONG_AXIS_ERROR_MAX_PCT,
}


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_phantoms: int = 120
    #: more phantoms, each with two small aneurysms (SMALL_MM): the sizes a 2-D reading
    #: labels artery, under-represented in a uniform 3-14 mm draw
    small_phantoms: int = 100
    steps: int = 2400
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    eval_phantoms: int = 16
    workers: int = 2

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(
            seed=seed, train_phantoms=3, small_phantoms=1, steps=20, eval_phantoms=1, workers=1
        )


def context_offset(slice_mm: float) -> int:
    """How many slices away the neighbours lie, as the node's runner computes it."""
    return max(1, round(CONTEXT_MM / max(slice_mm, 1e-3)))


def _make(seed: int) -> tuple[Tensor, Tensor]:
    torch.set_num_threads(1)
    if seed >= SMALL_SEED_BASE:
        ph = cta_phantom(seed, aneurysms=2, diameters_mm=SMALL_MM)
    else:
        ph = cta_phantom(seed)
    # every slice that shows an artery, and a few that do not
    shows = ph.labels.reshape(len(ph.labels), -1).any(axis=1)
    keep = np.flatnonzero(shows | (np.arange(len(shows)) % 6 == 0))
    stack = SliceStack(resize_input(ph.hu, INPUT_SIZE), context_offset(ph.spacing_mm[0]))
    x = torch.cat([stack.batch(int(k), int(k) + 1) for k in keep])
    return x, soft_targets(ph.labels[keep], CLASSES, INPUT_SIZE)


def make_training_set(cfg: Config) -> tuple[Tensor, Tensor]:
    """Generate the training slices (in parallel; the result does not depend on workers)."""
    seeds = [
        *range(cfg.train_phantoms),
        *range(SMALL_SEED_BASE, SMALL_SEED_BASE + cfg.small_phantoms),
    ]
    if cfg.workers > 1:
        with concurrent.futures.ProcessPoolExecutor(cfg.workers) as pool:
            parts = list(pool.map(_make, seeds, chunksize=4))
    else:
        parts = [_make(seed) for seed in seeds]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def train(cfg: Config, data: tuple[Tensor, Tensor]) -> UNet:
    x, y = data
    sacs = showing(y, ANEURYSM)  # a quarter of each batch: slices through an aneurysm

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        quarter = cfg.batch_size // 4
        return slice_batch(
            generator, x, y, cfg.batch_size, favoured=sacs, share=quarter, shift=20.0, flip=3
        )

    return fit(
        lambda: UNet(CLASSES, in_channels=3, window=(HU_MIN, HU_MAX)),
        cfg,
        batch,
        weight=torch.tensor([1.0, 1.0, ANEURYSM_WEIGHT]),
        bf16=True,
    )


def score_scan(
    manifest: Any,
    pred: np.ndarray,
    truth: np.ndarray,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
) -> dict[str, Any]:
    """The node's post-processing on ``pred``, matched to the true aneurysms."""
    volume = Volume(hu, spacing, (), "", "", "")
    output = segmentation_output(manifest, pred.copy(), volume)
    assert output.label_map is not None
    reported = [lab.value for lab in output.labels if lab.name.startswith("Aneurysm ")]
    long_axis = {
        m.label_value: m.value for m in output.measurements if m.concept.meaning == "Long Axis"
    }
    used: set[int] = set()
    rows = []
    for box, local in components(truth == ANEURYSM):
        true_mask = np.zeros(truth.shape, bool)
        true_mask[box] = local
        true_long = long_axis_mm(true_mask[box], spacing[1], spacing[2])
        hits = [v for v in reported if (output.label_map[box][local] == v).any()]
        row: dict[str, Any] = {"long_axis_mm": true_long, "found": bool(hits)}
        if hits:
            best = max(hits, key=lambda v: int((output.label_map[box][local] == v).sum()))
            used.add(best)
            row["long_axis_error_pct"] = 100 * (long_axis[best] - true_long) / true_long
        rows.append(row)
    return {
        "artery_dice": dice(output.label_map == ARTERY, truth == ARTERY),
        "aneurysms": rows,
        "false_positives": len(set(reported) - used),
    }


@torch.inference_mode()
def segment(module: torch.nn.Module, hu: np.ndarray, slice_mm: float) -> np.ndarray:
    """The node's 2.5-D runner path: area resize, each slice with its neighbours as
    channels, logits, bilinear upsample, argmax."""
    rows, cols = hu.shape[1:]
    stack = SliceStack(torch.as_tensor(hu).unsqueeze(1), context_offset(slice_mm))
    out = np.empty(hu.shape, np.uint8)
    for k in range(0, hu.shape[0], 16):
        x = torch.nn.functional.interpolate(stack.batch(k, k + 16), size=INPUT_SIZE, mode="area")
        up = torch.nn.functional.interpolate(
            module(x), size=(rows, cols), mode="bilinear", align_corners=False
        )
        out[k : k + 16] = up.argmax(dim=1).to(torch.uint8).numpy()
    return out


def evaluate(module: torch.nn.Module, manifest: Any, cfg: Config) -> dict[str, Any]:
    cases = []
    for i in range(cfg.eval_phantoms):
        seed = TEST_SEED_BASE + i
        ph = cta_phantom(seed)
        pred = segment(module, ph.hu, ph.spacing_mm[0])
        cases.append({"seed": seed, **score_scan(manifest, pred, ph.labels, ph.hu, ph.spacing_mm)})
    return {"cases": cases, "summary": summary(cases)}


def summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [a for c in cases for a in c["aneurysms"]]
    counted = [a for a in rows if a["long_axis_mm"] >= COUNTED_MM]
    found = [a for a in counted if a["found"]]
    errors = [abs(a["long_axis_error_pct"]) for a in found]
    return {
        "scans": len(cases),
        "artery_dice_min": min(c["artery_dice"] for c in cases),
        "artery_dice_mean": float(np.mean([c["artery_dice"] for c in cases])),
        "aneurysms": len(counted),
        "sensitivity": len(found) / max(1, len(counted)),
        "small_found": f"{sum(a['found'] for a in rows if a['long_axis_mm'] < COUNTED_MM)}"
        f"/{sum(a['long_axis_mm'] < COUNTED_MM for a in rows)}",
        "found_by_size_mm": {
            band: f"{sum(a['found'] for a in inside)}/{len(inside)}"
            for band, inside in (
                (f"{lo:g}-{hi:g}", [a for a in rows if lo <= a["long_axis_mm"] < hi])
                for lo, hi in ((0, 5), (5, 8), (8, 100))
            )
        },
        "false_positives_per_scan": sum(c["false_positives"] for c in cases) / len(cases),
        "long_axis_error_pct_median_abs": float(np.median(errors)) if errors else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    return record.main(argv, sys.modules[__name__], postprocess=True)


if __name__ == "__main__":
    sys.exit(main())
