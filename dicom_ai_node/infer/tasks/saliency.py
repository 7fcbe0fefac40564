"""Infer: saliency maps for image classifiers: occlusion sensitivity and Grad-CAM.

* Occlusion (Zeiler and Fergus 2014): slide a grey patch over the image and record how
  much the class probability drops wherever the patch covers. It needs no access to the
  network's layers or gradients, so it works the same for every runner (TorchScript,
  ONNX, MONAI, Python); it costs one forward pass per patch position, batched. It fails
  where a grey patch itself looks like the finding (a gap in a bone looks like a
  fracture).
* Grad-CAM (Selvaraju et al. 2017): the activations of one layer, weighted by the
  spatial mean of the class score's gradient, summed over channels, ReLU. It needs the
  network's layers: a module with ``features`` (a sequence of layers) and ``head``
  (applied to the spatial mean of the last one's output), as the built-in classifiers
  are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["Probabilities", "grad_cam", "occlusion_saliency", "resize_map"]

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


def grad_cam(
    module: torch.nn.Module, image: torch.Tensor, label_index: int, layer: int
) -> torch.Tensor:
    """Grad-CAM of one class for one image, at the output of ``features[layer]``.

    Parameters
    ----------
    module:
        A classifier with ``features`` (layers run in order) and ``head`` (applied to
        the spatial mean of the last layer's output, giving logits (N, classes)).
    image:
        (1, 1, H, W) at the input size.
    label_index:
        The class (logit) to explain.
    layer:
        Index of the layer of ``features`` whose activations are weighted.

    Returns
    -------
    torch.Tensor
        (H, W) float32 in 0..1 (bilinear from the layer's size), divided by its maximum
        (all zeros when no activation raises the class score).

    Raises
    ------
    ValueError
        When the module has no ``features`` and ``head`` or ``layer`` is out of range.
    """
    features = getattr(module, "features", None)
    head = getattr(module, "head", None)
    if features is None or head is None:
        raise ValueError("Grad-CAM needs a module with `features` and `head`")
    layers = list(features.children())
    if not 0 <= layer < len(layers):
        raise ValueError(f"saliency layer {layer} is not one of 0..{len(layers) - 1}")
    with torch.enable_grad():
        x = image.float()
        chosen = x
        for i, step in enumerate(layers):
            x = step(x)
            if i == layer:
                chosen = x.detach().requires_grad_(True)
                x = chosen
        score = head(x.mean(dim=(2, 3)))[0, label_index]
        (gradient,) = torch.autograd.grad(score, chosen)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * chosen.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    return cam / top if top > 0 else cam


def resize_map(heat: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A map at the input size -> the image's size (bilinear), values kept in 0..1."""
    out = F.interpolate(heat[None, None], size=shape, mode="bilinear", align_corners=False)
    return out[0, 0].clamp(0.0, 1.0)
