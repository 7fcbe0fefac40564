"""Geometry of label masks, pure numpy: shared by infer (measurements) and encode (SCOORDs).

No I/O and no heavy imports, like :mod:`.domain`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["largest_component", "max_feret_diameter_mm"]


def largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The largest 8-connected component of a 2-D mask, by union-find over row runs."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    run_rows, run_starts = np.nonzero(step == 1)
    run_ends = np.nonzero(step == -1)[1]  # exclusive; row-major order pairs them with starts
    starts, ends = run_starts.tolist(), run_ends.tolist()
    parent = list(range(len(starts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(run_rows, np.arange(mask.shape[0] + 1)).tolist()
    for r in range(mask.shape[0] - 1):
        a, b, c = first[r], first[r + 1], first[r + 2]
        for i in range(a, b):
            for j in range(b, c):
                # 8-connected: runs touch when they overlap or meet at a corner
                if starts[i] <= ends[j] and starts[j] <= ends[i]:
                    parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(len(starts))])
    area = np.bincount(roots, weights=run_ends - run_starts, minlength=len(starts))
    best = int(np.argmax(area))
    out = np.zeros(mask.shape, bool)
    for k in np.flatnonzero(roots == best).tolist():
        out[run_rows[k], starts[k] : ends[k]] = True
    return out


def _hull(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Convex hull of 2-D points (Andrew's monotone chain), counter-clockwise."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) <= 2:
        return np.array(pts, np.float64)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1], np.float64)


def max_feret_diameter_mm(mask: npt.NDArray[np.bool_], row_mm: float, column_mm: float) -> float:
    """The longest distance across a 2-D region, edge to edge, in mm (0 when empty).

    Measured between the outer corners of the region's boundary pixels (each pixel is a
    ``row_mm`` x ``column_mm`` rectangle), through their convex hull: the in-plane long
    axis of a lesion as a reader would caliper it (RECIST 1.1 measures it so).
    """
    if not mask.any():
        return 0.0
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    rows, cols = np.nonzero(mask & ~inner)
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)]
    ).astype(np.float64)
    corners *= np.array([row_mm, column_mm])
    hull = _hull(corners)
    gaps = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((gaps**2).sum(axis=-1)).max())
