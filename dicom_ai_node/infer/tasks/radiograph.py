"""Infer: the input scaling of projection-radiograph classifiers.

Radiographs carry no calibrated unit (unlike CT's HU) and their stored values run
either way (MONOCHROME1: high = dark, PS3.3 C.7.6.3.1.2), so each image is scaled on its
own: MONOCHROME1 is inverted when the volume is loaded
(:mod:`~dicom_ai_node.infer.volume`), and here the 1st..99th percentile of its pixels
maps to 0..1 before the image is area-resized to the network's input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["scale_radiographs"]

#: Pixels sampled per image for the percentiles (a 4000 x 3000 image is strided).
_SAMPLE = 1_000_000


def scale_radiographs(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) stored values (dense = high) -> (N, 1, size) float32 in 0..1.

    Parameters
    ----------
    pixels:
        One image per row of the first axis, after the Modality LUT.
    size:
        The network's input (rows, columns).
    """
    out = []
    for image in pixels:
        step = max(1, int((image.numel() / _SAMPLE) ** 0.5 + 0.999))
        sample = image[::step, ::step].reshape(-1).float()
        low, high = torch.quantile(sample, torch.tensor([0.01, 0.99])).tolist()
        scaled = ((image.float() - low) / max(high - low, 1e-6)).clamp_(0.0, 1.0)
        out.append(F.interpolate(scaled[None, None], size=size, mode="area")[0])
    return torch.stack(out)
