"""Generated chest CT phantoms with known lung masks, for training and testing (numpy only).

The phantom is a body ellipse of soft tissue with two lungs (air-like parenchyma) per
slice, a mediastinum/heart blob, a spine and ribs, randomised in size, position,
intensity, noise and blur. The label map is the truth the lung model is scored against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["LEFT_LUNG", "RIGHT_LUNG", "ChestPhantom", "chest_ct_phantom"]

RIGHT_LUNG = 1
LEFT_LUNG = 2


@dataclass(frozen=True)
class ChestPhantom:
    """A generated chest CT volume with its truth.

    Attributes
    ----------
    hu:
        (slices, rows, columns) int16 Hounsfield units.
    labels:
        (slices, rows, columns) uint8; 0 background, 1 right lung, 2 left lung.
    spacing_mm:
        (slice spacing, row spacing, column spacing).
    """

    hu: npt.NDArray[np.int16]
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]

    def lung_volume_ml(self, label: int) -> float:
        """True volume of one lung in millilitres."""
        voxel_ml = float(np.prod(self.spacing_mm)) / 1000.0
        return float(np.count_nonzero(self.labels == label)) * voxel_ml


def _ellipse(
    yy: npt.NDArray[np.float64],
    xx: npt.NDArray[np.float64],
    cy: float,
    cx: float,
    ry: float,
    rx: float,
) -> npt.NDArray[np.bool_]:
    result: npt.NDArray[np.bool_] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return result


def chest_ct_phantom(
    slices: int = 120,
    rows: int = 256,
    columns: int = 256,
    spacing_mm: tuple[float, float, float] = (2.5, 1.4, 1.4),
    seed: int = 0,
) -> ChestPhantom:
    """Generate a chest CT phantom.

    Parameters
    ----------
    slices, rows, columns:
        Shape of the volume; slice 0 is the most caudal.
    spacing_mm:
        (slice spacing, row spacing, column spacing) in mm.
    seed:
        Seed for every random choice; the same seed gives the same phantom.

    Returns
    -------
    ChestPhantom
        The volume and its truth.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float64)
    fov_y, fov_x = rows * spacing_mm[1], columns * spacing_mm[2]
    # body and lung sizes in mm, then to pixels
    body_ry = rng.uniform(100, 130) / spacing_mm[1]
    body_rx = rng.uniform(150, 190) / spacing_mm[2]
    body_rx = min(body_rx, 0.47 * columns)
    body_ry = min(body_ry, 0.45 * rows)
    cy = rows / 2 + rng.uniform(-0.03, 0.03) * rows
    cx = columns / 2 + rng.uniform(-0.03, 0.03) * columns
    lung_ry = body_ry * rng.uniform(0.55, 0.72)
    lung_rx = body_rx * rng.uniform(0.28, 0.36)
    gap = body_rx * rng.uniform(0.08, 0.16)
    z_len = slices * spacing_mm[0]
    lung_z0 = rng.uniform(0.05, 0.15) * z_len
    lung_z1 = z_len - rng.uniform(0.05, 0.15) * z_len
    tissue_hu = rng.uniform(20, 60)
    lung_hu = rng.uniform(-880, -760)
    noise = rng.uniform(8, 30)
    del fov_y, fov_x

    hu = np.full((slices, rows, columns), -1000.0, np.float32)
    labels = np.zeros((slices, rows, columns), np.uint8)
    for k in range(slices):
        z = (k + 0.5) * spacing_mm[0]
        body = _ellipse(yy, xx, cy, cx, body_ry, body_rx)
        sl = np.where(body, tissue_hu, -1000.0)
        # lungs: ellipses that taper at apex and base
        if lung_z0 < z < lung_z1:
            t = (z - lung_z0) / (lung_z1 - lung_z0)
            taper = float(np.sin(np.pi * min(1.0, 0.15 + 0.85 * t)) ** 0.5)
            for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
                # image left is patient right (radiological convention, LPS)
                lcx = cx + side * (gap + lung_rx * taper)
                lung = _ellipse(yy, xx, cy - 0.05 * body_ry, lcx, lung_ry * taper, lung_rx * taper)
                lung &= body
                sl[lung] = lung_hu
                labels[k][lung] = label
            # heart blob in the left-anterior mediastinum
            heart = _ellipse(yy, xx, cy - 0.25 * body_ry, cx + 0.1 * body_rx, 0.3 * body_ry, 0.2 * body_rx)
            sl[heart & (labels[k] == 0)] = tissue_hu + 10
        # spine posterior
        spine = _ellipse(yy, xx, cy + 0.75 * body_ry, cx, 0.12 * body_ry, 0.08 * body_rx)
        sl[spine] = 700.0
        hu[k] = sl
    hu += rng.normal(0.0, noise, hu.shape).astype(np.float32)
    hu = np.clip(hu, -1024, 3071)
    return ChestPhantom(hu=hu.astype(np.int16), labels=labels, spacing_mm=spacing_mm)
