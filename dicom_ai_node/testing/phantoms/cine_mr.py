"""Testing: cardiac cine MR (short axis, bSSFP look) with the left ventricle labelled.

The training and test data of the built-in cine model (``models/mr_cine_lv``) and the
studies of its tests. Nothing is downloaded: every series is drawn from a seed.

One cardiac cycle of ``phases`` frames at one or more short-axis levels (base to apex).
Image coordinates (rows down, columns right, as a short-axis view is displayed: the
right ventricle on the image's left): the chest wall with bright fat, both lungs
(dark), the liver (below), the right ventricle (a crescent of bright blood) and the left
ventricle: bright blood inside a dark myocardial ring with two papillary muscles. The
left-ventricular cavity area follows a volume curve (systole to end-systole at 30-42 % of
the cycle, then rapid filling, diastasis and the atrial kick) drawn from an ejection
fraction of 15-75 %; the myocardium keeps its area (it thickens in systole), and the
heart moves a little through the cycle. Cavity size, wall thickness, intensities, coil
bias field, noise, pixel size and phase count are random.

Label values: 1 left-ventricular cavity (blood pool, papillary muscles included, as
in the disc-summation volumes of clinical practice), 2 left-ventricular myocardium.
Values are arbitrary MR units (an unsigned 12-bit range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import blur, smooth_field

__all__ = ["CAVITY", "MYOCARDIUM", "CinePhantom", "cine_phantom", "volume_curve"]

_F = npt.NDArray[np.float32]

#: Label values.
CAVITY = 1
MYOCARDIUM = 2


@dataclass(frozen=True)
class CinePhantom:
    """One generated cine series and its truth.

    Attributes
    ----------
    image:
        (levels, phases, rows, columns) float32, arbitrary MR units.
    labels:
        Same shape, uint8: :data:`CAVITY`, :data:`MYOCARDIUM`.
    spacing_mm:
        (distance between levels, row spacing, column spacing).
    ejection_fraction:
        The drawn fraction of the cavity volume ejected (0..1).
    end_systole:
        The phase index of end-systole (end-diastole is phase 0).
    """

    image: _F
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]
    ejection_fraction: float
    end_systole: int

    def cavity_mm2(self) -> npt.NDArray[np.float64]:
        """Cavity area per (level, phase) in mm2, from the labels."""
        pixel = self.spacing_mm[1] * self.spacing_mm[2]
        counts = (self.labels == CAVITY).sum(axis=(2, 3))
        areas: npt.NDArray[np.float64] = counts.astype(np.float64) * pixel
        return areas

    def cavity_ml(self) -> npt.NDArray[np.float64]:
        """Cavity volume per phase in mL (disc summation over the levels)."""
        volumes: npt.NDArray[np.float64] = self.cavity_mm2().sum(axis=0) * self.spacing_mm[0] / 1000
        return volumes


def volume_curve(phases: int, fraction: float, systole: float) -> npt.NDArray[np.float64]:
    """Relative cavity volume per phase, 1 at end-diastole (phase 0) and ``1 - fraction``
    at end-systole (``systole`` of the cycle), with rapid filling, diastasis and an
    atrial kick in diastole."""
    t = np.arange(phases) / phases
    low = 1.0 - fraction
    out = np.empty(phases)
    sys_mask = t <= systole
    out[sys_mask] = 1.0 - fraction * (1 - np.cos(np.pi * t[sys_mask] / systole)) / 2
    u = (t[~sys_mask] - systole) / (1 - systole)
    filling = 0.8 * (1 - np.exp(-u / 0.18)) / (1 - math.exp(-1 / 0.18))  # early, to 80 %
    kick = 0.2 * np.clip((u - 0.75) / 0.25, 0, 1) ** 2  # late atrial contraction
    out[~sys_mask] = low + fraction * np.minimum(filling + kick, 1.0)
    return out


def cine_phantom(
    seed: int,
    levels: int = 1,
    phases: int | None = None,
    size: int | None = None,
    ejection_fraction: float | None = None,
) -> CinePhantom:
    """Draw one cine series.

    Parameters
    ----------
    seed:
        The random source: the same seed gives the same series.
    levels:
        Short-axis levels from base to apex (1: one mid-ventricular slice).
    phases:
        Frames per cycle; ``None``: 16-30.
    size:
        Rows and columns; ``None``: 128-208.
    ejection_fraction:
        ``None``: 0.15-0.75.
    """
    rng = np.random.default_rng([seed, 31])
    phases = phases or int(rng.integers(16, 31))
    size = size or int(rng.choice([128, 144, 160, 192, 208]))
    drawn = float(rng.uniform(0.15, 0.75))
    fraction = ejection_fraction if ejection_fraction is not None else drawn
    systole = float(rng.uniform(0.30, 0.42))
    pixel = float(rng.uniform(1.2, 1.9)) * 160 / size
    gap = float(rng.uniform(8.0, 10.0))
    # a cavity volume curve; the area at each level scales with it (areas of similar
    # cross-sections: the volume fraction applies to every level's area)
    curve = volume_curve(phases, fraction, systole)
    r_ed = float(rng.uniform(20.0, 30.0))  # mid-ventricular cavity radius at end-diastole
    wall = float(rng.uniform(6.0, 11.0))
    yy, xx = np.meshgrid(
        (np.arange(size, dtype=np.float32) - size / 2 + 0.5) * pixel,
        (np.arange(size, dtype=np.float32) - size / 2 + 0.5) * pixel,
        indexing="ij",
    )
    centre = rng.uniform(-15, 15, 2)
    gains = {
        "blood": float(rng.uniform(0.8, 1.0)),
        "myocardium": float(rng.uniform(0.15, 0.3)),
        "tissue": float(rng.uniform(0.3, 0.45)),
        "fat": float(rng.uniform(0.7, 0.95)),
        "lung": float(rng.uniform(0.02, 0.08)),
        "liver": float(rng.uniform(0.25, 0.4)),
    }
    scale = float(rng.uniform(400, 3000))
    bias = 1 + 0.2 * smooth_field((size, size), 4, rng)
    noise = float(rng.uniform(0.01, 0.05))
    body_a, body_b = float(rng.uniform(140, 180)), float(rng.uniform(100, 130))
    lung_shift = float(rng.uniform(55, 75))
    motion = rng.uniform(-2.5, 2.5, 2)
    rv_fraction = float(np.clip(fraction + rng.uniform(-0.15, 0.1), 0.1, 0.7))
    papillary = [(float(rng.uniform(0.6, 1.2)), float(rng.uniform(0.4, 0.7))) for _ in range(2)]
    image = np.empty((levels, phases, size, size), np.float32)
    labels = np.zeros((levels, phases, size, size), np.uint8)
    for level in range(levels):
        # base (level 0) to apex: the cavity narrows towards the apex
        depth = (level + 0.5) / levels if levels > 1 else 0.5
        taper = math.sqrt(max(0.05, 1.0 - depth**2 * 0.85)) if levels > 1 else 1.0
        for phase in range(phases):
            v = float(curve[phase])
            cy = centre[0] + motion[0] * (1 - v) / max(fraction, 1e-3)
            cx = centre[1] + motion[1] * (1 - v) / max(fraction, 1e-3)
            radius = r_ed * taper * math.sqrt(v)
            outer = math.sqrt(radius**2 + (r_ed * taper + wall) ** 2 - (r_ed * taper) ** 2)
            dist = np.hypot(yy - cy, xx - cx)
            frame = np.full((size, size), 0.0, np.float32)
            body = ((xx / body_a) ** 2 + ((yy - 10) / body_b) ** 2) <= 1.0
            fat = body & (((xx / (body_a - 8)) ** 2 + ((yy - 10) / (body_b - 8)) ** 2) > 1.0)
            frame[body] = gains["tissue"]
            frame[fat] = gains["fat"]
            for side in (-1, 1):
                lung = ((xx - side * lung_shift) / 45) ** 2 + ((yy + 5) / 70) ** 2 <= 1.0
                frame[lung & body & (dist > outer + 6)] = gains["lung"]
            liver = (((xx + 40) / 80) ** 2 + ((yy - 95) / 45) ** 2) <= 1.0
            frame[liver & body & (dist > outer + 4)] = gains["liver"]
            # right ventricle: a crescent on the image's left of the septum
            rv_v = 1 - rv_fraction * (1 - v) / max(fraction, 1e-3)
            rv = (
                np.hypot(yy - cy, (xx - cx + outer * 0.75) / 1.6)
                < outer * 0.95 * math.sqrt(max(rv_v, 0.2)) * taper**0.5
            ) & (dist > outer + 1.5)
            frame[rv] = gains["blood"]
            frame[(dist <= outer) & (dist > radius)] = gains["myocardium"]
            cavity = dist <= radius
            frame[cavity] = gains["blood"]
            for k, (angle, reach) in enumerate(papillary):
                a = angle + k * 2.2
                py, px = cy + math.sin(a) * radius * reach, cx + math.cos(a) * radius * reach
                muscle = np.hypot(yy - py, xx - px) < radius * 0.16
                frame[muscle & cavity] = gains["myocardium"]
            myocardium = (dist <= outer) & ~cavity
            labels[level, phase][cavity] = CAVITY
            labels[level, phase][myocardium] = MYOCARDIUM
            frame = blur(frame, 0.6)
            frame = frame * bias + noise * np.abs(
                rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
            ).astype(np.float32)
            image[level, phase] = frame * scale
    end_systole = int(np.argmin(curve))
    return CinePhantom(image, labels, (gap, pixel, pixel), fraction, end_systole)
