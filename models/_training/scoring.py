"""Training: the scores a training script gives a model on its held-out cases, each written once.

Held-out cases go through the node's own path (:func:`segment` is the TorchScript
runner's), so that a score describes what the node will report.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .loop import resize_input

__all__ = ["auc", "dice", "segment", "volume_scores"]


def dice(p: np.ndarray, t: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape (0 when both are empty)."""
    return float(2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum()))


def volume_scores(
    pred: np.ndarray, truth: np.ndarray, value: int, voxel_ml: float
) -> dict[str, float]:
    """Dice of label ``value`` and its volume in the prediction and the truth (ml), with the
    prediction's error in percent of the truth."""
    p, t = pred == value, truth == value
    n_p, n_t = int(p.sum()), int(t.sum())
    return {
        "dice": dice(p, t),
        "volume_ml": n_p * voxel_ml,
        "true_volume_ml": n_t * voxel_ml,
        "volume_error_pct": 100 * (n_p - n_t) / max(1, n_t),
    }


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


@torch.inference_mode()
def segment(
    module: torch.nn.Module, image: np.ndarray, size: int, batch_size: int = 16
) -> np.ndarray:
    """The node's TorchScript runner path for a (Z, Y, X) image: area resize to ``size``,
    logits in batches of ``batch_size`` slices, bilinear upsampling, argmax."""
    rows, cols = image.shape[1:]
    out = np.empty(image.shape, np.uint8)
    for k in range(0, image.shape[0], batch_size):
        logits = module(resize_input(image[k : k + batch_size], size))
        up = F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=False)
        out[k : k + batch_size] = up.argmax(dim=1).to(torch.uint8).numpy()
    return out
