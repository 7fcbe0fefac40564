"""Infer: sliding-window inference of large images at a fixed pixel size.

A network trained on patches at one pixel size (a mammogram's microcalcifications are
a few pixels across at 0.1 mm) cannot see a whole image resized to its input: the
details vanish. With ``preprocess.tile = true`` the node resamples each image to
``preprocess.pixel_mm`` (when given), runs the network on overlapping tiles of
``preprocess.input_size`` (``tile_overlap``, default 0.25), averages the overlapping
logits, and takes the argmax; memory is bounded by one image's logits and one batch of
tiles, whatever the image's size (as MONAI's ``sliding_window_inference`` does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["resample", "sliding_window"]


def resample(x: torch.Tensor, spacing_mm: tuple[float, float], pixel_mm: float) -> torch.Tensor:
    """(N, 1, H, W) at ``spacing_mm`` (row, column) -> the same at ``pixel_mm`` pixels
    (area averaging when shrinking, bilinear when enlarging)."""
    rows = max(1, round(x.shape[-2] * spacing_mm[0] / pixel_mm))
    cols = max(1, round(x.shape[-1] * spacing_mm[1] / pixel_mm))
    if (rows, cols) == tuple(x.shape[-2:]):
        return x
    if rows <= x.shape[-2] and cols <= x.shape[-1]:
        return F.interpolate(x, size=(rows, cols), mode="area")
    return F.interpolate(x, size=(rows, cols), mode="bilinear", align_corners=False)


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile origins covering ``length`` (the last one flush with the end)."""
    if length <= tile:
        return [0]
    out = list(range(0, length - tile, step))
    return [*out, length - tile]


def sliding_window(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: tuple[int, int],
    overlap: float = 0.25,
    batch_size: int = 8,
) -> torch.Tensor:
    """Logits (1, C, H, W) of one image (1, 1, H, W), tile by tile.

    Parameters
    ----------
    forward:
        The network: (B, 1, tile rows, tile columns) -> (B, C, same).
    image:
        The image; smaller than a tile, it is zero-padded at the bottom and right.
    tile:
        The network's input size.
    overlap:
        Fraction of a tile shared with the next one (0 <= overlap < 1).
    batch_size:
        Tiles per call of ``forward``.
    """
    rows, cols = int(image.shape[-2]), int(image.shape[-1])
    height, width = max(rows, tile[0]), max(cols, tile[1])
    if (height, width) != (rows, cols):
        image = F.pad(image, (0, width - cols, 0, height - rows))
    steps = [max(1, int(t * (1 - overlap))) for t in tile]
    origins = [
        (r, c)
        for r in _starts(height, tile[0], steps[0])
        for c in _starts(width, tile[1], steps[1])
    ]
    total: torch.Tensor | None = None
    counts = torch.zeros((1, 1, height, width), dtype=torch.float32)
    for k in range(0, len(origins), batch_size):
        chunk = origins[k : k + batch_size]
        tiles = torch.cat([image[..., r : r + tile[0], c : c + tile[1]] for r, c in chunk])
        logits = forward(tiles).float()
        if total is None:
            total = torch.zeros((1, logits.shape[1], height, width), dtype=torch.float32)
        for (r, c), out in zip(chunk, logits, strict=True):
            total[0, :, r : r + tile[0], c : c + tile[1]] += out
            counts[0, :, r : r + tile[0], c : c + tile[1]] += 1
    assert total is not None
    return (total / counts)[..., :rows, :cols]
