"""Infer: model-agnostic saliency maps for image classifiers (occlusion sensitivity).

Zeiler and Fergus (2014): slide a grey patch over the image and record how much the
class probability drops wherever the patch covers. Unlike Grad-CAM it needs no access to
the network's layers or gradients, so it works the same for every runner (TorchScript,
ONNX, MONAI, Python); it costs one forward pass per patch position, batched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["Probabilities", "occlusion_saliency", "resize_map"]

#: A batch (N, 1, H, W) at the network's input size -> probabilities (N, K).
Probabilities = Callable[[torch.Tensor], torch.Tensor]


def occlusion_saliency(
    probabilities: Probabilities,
    image: torch.Tensor,
    label_index: int,
    *,
    grid: int = 8,
    batch_size: int = 32,
) -> torch.Tensor:
    """Occlusion sensitivity of one class for one image.

    Parameters
    ----------
    probabilities:
        The classifier, from a batch at its input size to class probabilities.
    image:
        (1, 1, H, W) at the input size.
    label_index:
        The class (column of the probabilities) to explain.
    grid:
        The patch is 1/grid of the image's side; it moves by half a patch.
    batch_size:
        Occluded images per forward pass.

    Returns
    -------
    torch.Tensor
        (H, W) float32 in 0..1: the probability drop when that place is hidden, averaged
        over the patches that cover it, divided by its maximum (all zeros when hiding
        nothing lowers the probability).
    """
    _, _, h, w = image.shape
    ph, pw = max(1, h // grid), max(1, w // grid)
    sh, sw = max(1, ph // 2), max(1, pw // 2)
    tops = list(range(0, h - ph + 1, sh))
    lefts = list(range(0, w - pw + 1, sw))
    boxes = [(t, left) for t in tops for left in lefts]
    fill = image.mean()
    base = float(probabilities(image)[0, label_index])
    drops = torch.empty(len(boxes))
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = image.repeat(len(chunk), 1, 1, 1)
        for i, (t, left) in enumerate(chunk):
            batch[i, :, t : t + ph, left : left + pw] = fill
        drops[start : start + len(chunk)] = base - probabilities(batch)[:, label_index].float()
    heat = torch.zeros((h, w))
    count = torch.zeros((h, w))
    for (t, left), drop in zip(boxes, drops.clamp(min=0.0), strict=True):
        heat[t : t + ph, left : left + pw] += drop
        count[t : t + ph, left : left + pw] += 1
    heat = heat / count.clamp(min=1)
    top = float(heat.max())
    return heat / top if top > 0 else heat


def resize_map(heat: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A map at the input size -> the image's size (bilinear), values kept in 0..1."""
    out = F.interpolate(heat[None, None], size=shape, mode="bilinear", align_corners=False)
    return out[0, 0].clamp(0.0, 1.0)
