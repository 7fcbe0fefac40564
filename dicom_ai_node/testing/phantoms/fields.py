"""Testing: the random fields, blurs and coordinate grids that several phantoms share.

numpy only. Every function draws from the generator it is given and from nothing else, so
that a phantom made from a seed is the same on every machine.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "Grid",
    "blur",
    "blur_axes",
    "box_blur",
    "ellipsoid",
    "smooth_field",
    "upsample",
]

_F = npt.NDArray[np.float32]
_B = npt.NDArray[np.bool_]


def smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> _F:
    """A smooth random field in about -1..1: a coarse grid, bilinearly upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    ys = np.linspace(0, cells - 1, shape[0], dtype=np.float32)
    xs = np.linspace(0, cells - 1, shape[1], dtype=np.float32)
    y0 = np.minimum(ys.astype(int), cells - 2)
    x0 = np.minimum(xs.astype(int), cells - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    out: _F = ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy).astype(np.float32)
    return out


def upsample(coarse: _F, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Bilinear upsampling of a small grid to ``shape`` (a smooth random field)."""
    gy, gx = coarse.shape
    ys = np.linspace(0, gy - 1, shape[0], dtype=np.float32)
    xs = np.linspace(0, gx - 1, shape[1], dtype=np.float32)
    rows = np.stack([np.interp(xs, np.arange(gx), coarse[i]) for i in range(gy)])
    out = np.stack([np.interp(ys, np.arange(gy), rows[:, j]) for j in range(shape[1])], axis=1)
    return out.astype(np.float32)


def _gaussian(img: _F, axis: int, sigma: float) -> _F:
    """A Gaussian blur along one axis of a 2-D image (sigma in pixels), edges replicated."""
    radius = max(1, int(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(img, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], "edge")
    acc = np.zeros_like(img)
    n = img.shape[axis]
    for k, w in enumerate(kernel):
        acc += w * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
    return acc


def blur(img: _F, sigma: float) -> _F:
    """Separable Gaussian blur (sigma in pixels), edges replicated; below 0.3 ``img`` itself."""
    if sigma < 0.3:
        return img
    return blur_axes(img, sigma, sigma)


def blur_axes(img: _F, sigma_rows: float, sigma_cols: float) -> _F:
    """Separable Gaussian blur with its own sigma per axis (pixels), edges replicated.

    An axis whose sigma is below 0.3 is left as it is; the result is always a new array.
    """
    out = img
    for axis, sigma in ((0, sigma_rows), (1, sigma_cols)):
        if sigma < 0.3:
            continue
        out = _gaussian(out, axis, sigma)
    return out.astype(np.float32)


def box_blur(img: _F, rng: np.random.Generator) -> _F:
    """A 3x3 box blur of random strength (reconstruction kernels differ)."""
    w = float(rng.uniform(0.0, 0.6))
    padded = np.pad(img, 1, mode="edge")
    box = (
        sum(padded[i : i + img.shape[0], j : j + img.shape[1]] for i in range(3) for j in range(3))
        / 9
    )
    return ((1 - w) * img + w * box).astype(np.float32)


def ellipsoid(
    x: _F,
    y: _F,
    z: _F,
    centre: tuple[float, float, float],
    axes: tuple[float, float, float],
) -> _F:
    """The ellipsoid's level at the points (x, y, z), broadcast: < 1 inside."""
    level: _F = (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    ).astype(np.float32)
    return level


class Grid:
    """Normalised coordinates of a radiograph's frame: x, y in about -1..1, y down.

    The frame is drawn at random: scaled by 0.78-1.02, turned by up to 6 degrees and
    shifted by up to 7 % of the image, as a patient lies differently on every film.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        scale = float(rng.uniform(0.78, 1.02))
        angle = math.radians(float(rng.uniform(-6, 6)))
        dx, dy = rng.uniform(-0.07, 0.07, 2)
        v = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        yy, xx = np.meshgrid(v, v, indexing="ij")
        xr = (math.cos(angle) * (xx - dx) + math.sin(angle) * (yy - dy)) / scale
        yr = (-math.sin(angle) * (xx - dx) + math.cos(angle) * (yy - dy)) / scale
        self.x: _F = xr.astype(np.float32)
        self.y: _F = yr.astype(np.float32)
        self.size = size
        self.scale = scale

    def ellipse(self, cx: float, cy: float, ax: float, ay: float) -> _B:
        """Points inside the axis-aligned ellipse (normalised units)."""
        return ((self.x - cx) / ax) ** 2 + ((self.y - cy) / ay) ** 2 <= 1.0

    def band(self, x0: float, y0: float, x1: float, y1: float, half_width: float) -> _B:
        """Points within ``half_width`` of the segment (x0, y0)-(x1, y1)."""
        px, py = self.x - x0, self.y - y0
        vx, vy = x1 - x0, y1 - y0
        t = np.clip((px * vx + py * vy) / (vx * vx + vy * vy), 0.0, 1.0)
        return (px - t * vx) ** 2 + (py - t * vy) ** 2 <= half_width**2
