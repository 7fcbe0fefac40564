"""Train the built-in chest radiograph classifier (normal / abnormal); write TorchScript.

Training data: PA chest radiographs from ``dicom_ai_node.testing.phantoms.chest_xr``,
half normal, half with one finding (nodule, consolidation, pleural effusion or
cardiomegaly), drawn at 192 to 320 pixels and scaled as the node scales them
(``dicom_ai_node.infer.tasks.radiograph.scale_radiographs``): no download, reproducible.
The fracture model (``models/xr_fracture``) is trained and scored by this script's
recipe (:func:`train`, :func:`evaluate`, :func:`main`) on other images.

Scoring (held-out seeds from 10 000 on, never trained on): AUC, sensitivity and
specificity at the shipped threshold, sensitivity per finding, and the "pointing game"
of the node's saliency map (occlusion sensitivity,
``dicom_ai_node.infer.tasks.saliency``): how often its maximum lies on the finding.

Usage (from the repository's root)::

    python -m models.cxr_abnormal.train --out models/cxr_abnormal           # full run
    python -m models.cxr_abnormal.train --smoke --out /tmp/cxr-abnormal     # < 60 s check
    python -m models.cxr_abnormal.train --evaluate-only --out models/cxr_abnormal  # re-score
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dicom_ai_node.infer.tasks.radiograph import scale_radiographs
from dicom_ai_node.infer.tasks.saliency import occlusion_saliency
from dicom_ai_node.testing.phantoms.chest_xr import FINDINGS, chest_radiograph
from models._training import record
from models._training.loop import fit_classifier
from models._training.scoring import auc
from models.cxr_abnormal.net import INPUT_SIZE, AbnormalNet

TEST_SEED_BASE = 10_000
THRESHOLD = 0.5
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
AUC_MIN = 0.90
POINTING_GAME_MIN = 0.5
ACCEPTANCE = {"auc_min": AUC_MIN, "pointing_game_min": POINTING_GAME_MIN}
SIZE = (INPUT_SIZE, INPUT_SIZE)


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_images: int = 8000
    steps: int = 1800
    batch_size: int = 32
    lr: float = 2e-3
    eval_images: int = 400
    saliency_images: int = 80

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(seed=seed, train_images=160, steps=25, eval_images=40, saliency_images=4)


#: One training or test example: image (display density), abnormal, finding name, mask.
Example = tuple[np.ndarray, bool, str, np.ndarray]
#: Draws example ``k`` of a set (the finding may depend on k) from the set's generator.
Sampler = Callable[[int, np.random.Generator], Example]


def sample_chest(k: int, rng: np.random.Generator) -> Example:
    """Half normal, the abnormal ones' findings in turn; drawn at 192 to 320 pixels."""
    finding = FINDINGS[(k // 2) % len(FINDINGS)] if k % 2 else ""
    size = int(rng.choice([192, 256, 320]))
    ph = chest_radiograph(size, rng, finding)
    return ph.image, ph.abnormal, finding, ph.mask


def draw(
    n: int, seed: int, sample: Sampler = sample_chest
) -> tuple[Tensor, Tensor, list[str], list[np.ndarray]]:
    """``n`` examples scaled to the input size as the node scales them."""
    rng = np.random.default_rng(seed)
    images, labels, findings, masks = [], [], [], []
    for k in range(n):
        image, abnormal, finding, truth = sample(k, rng)
        images.append(scale_radiographs(torch.from_numpy(image)[None], SIZE).half())
        labels.append(float(abnormal))
        findings.append(finding)
        mask = torch.from_numpy(truth.astype(np.float32))[None, None]
        masks.append(F.interpolate(mask, size=SIZE, mode="area")[0, 0].numpy() > 0)
    return torch.cat(images), torch.tensor(labels), findings, masks


def make_training_set(cfg: Config, sample: Sampler = sample_chest) -> tuple[Tensor, Tensor]:
    """``cfg.train_images`` examples of ``sample`` drawn from ``cfg.seed``: images, labels."""
    x, y, _, _ = draw(cfg.train_images, cfg.seed, sample)
    return x, y


def train(cfg: Config, data: tuple[Tensor, Tensor]) -> AbnormalNet:
    x, y = data

    def batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        pick = torch.randint(0, len(x), (cfg.batch_size,), generator=generator)
        images = x[pick].float()
        # contrast jitter on top of the generator's: the percentile scaling is not exact
        gain = 0.85 + 0.3 * torch.rand((len(pick), 1, 1, 1), generator=generator)
        return (images * gain).clamp(0.0, 1.0), y[pick]

    def loss(logits: Tensor, abnormal: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits[:, 0], abnormal)

    return fit_classifier(AbnormalNet, cfg, batch, loss)


def probabilities_of(module: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    def probabilities(batch: Tensor) -> Tensor:
        with torch.inference_mode():
            return torch.sigmoid(module(batch.float()))

    return probabilities


#: The saliency map the node makes for this model (manifest ``postprocess.saliency``).
Saliency = Callable[[torch.nn.Module, Tensor], Tensor]


def occlusion(module: torch.nn.Module, image: Tensor) -> Tensor:
    """``saliency = true`` (occlusion), as ``infer/tasks/classify.py`` makes it."""
    return occlusion_saliency(probabilities_of(module), image.float(), 0)


def evaluate(
    module: torch.nn.Module,
    cfg: Config,
    sample: Sampler = sample_chest,
    saliency: Saliency = occlusion,
) -> dict[str, Any]:
    x, y, findings, masks = draw(cfg.eval_images, TEST_SEED_BASE, sample)
    probabilities = probabilities_of(module)

    scores = torch.cat([probabilities(x[i : i + 64]) for i in range(0, len(x), 64)])[:, 0]
    s, labels = scores.numpy(), y.numpy()
    positive = s >= THRESHOLD
    normal = labels == 0
    spec90 = float(np.quantile(s[normal], 0.9)) if normal.any() else 1.0
    kinds = sorted({f for f in findings if f}, key=findings.index)
    per_finding = {
        f: float(positive[[k for k, g in enumerate(findings) if g == f]].mean()) for f in kinds
    }
    hits = tried = 0
    for k in np.flatnonzero((labels == 1) & positive)[: cfg.saliency_images]:
        heat = saliency(module, x[k : k + 1].float())
        r, c = np.unravel_index(int(heat.argmax()), heat.shape)
        tried += 1
        hits += bool(masks[k][max(0, r - 8) : r + 9, max(0, c - 8) : c + 9].any())
    return {
        "images": len(s),
        "auc": auc(s, labels),
        "threshold": THRESHOLD,
        "sensitivity": float(positive[labels == 1].mean()),
        "specificity": float((~positive[normal]).mean()),
        "sensitivity_at_90_specificity": float((s[labels == 1] > spec90).mean()),
        "sensitivity_per_finding": per_finding,
        "saliency_pointing_game": {
            "images": tried,
            "hits": hits,
            "rate": hits / tried if tried else float("nan"),
            "rule": "saliency maximum within 8 input pixels of the finding's mask",
        },
    }


def main(argv: list[str] | None = None, script: ModuleType | None = None) -> int:
    """The command line of this script, or of ``script``, a classifier trained by this
    recipe on other images (its own ``Config``, ``make_training_set``, ``train``,
    ``evaluate`` and ``ACCEPTANCE``, as :func:`models._training.record.main` reads them)."""
    return record.main(
        argv,
        script or sys.modules[__name__],
        unit="images",
        export=record.export_scripted,
        evaluate_only=True,
    )


if __name__ == "__main__":
    sys.exit(main())
