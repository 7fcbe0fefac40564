"""Generated axial brain MR (T1-weighted look) with labelled brain and ventricles.

The training and test data of the built-in brain atrophy model (``models/mr_brain_atrophy``)
and the studies of its tests. Nothing is downloaded: every volume is drawn from a seed.

The anatomy is drawn in millimetres in patient coordinates (x to the patient's left, y
posterior, z superior, PS3.3 C.7.6.2.1.1): scalp and skull, the brain with a grey matter
rim over white matter, sulcal CSF at the surface, and the lateral and third ventricles.
An ``atrophy`` parameter (0 = none, 1 = severe) widens the CSF gap under the skull and the
sulci, shrinks the brain and enlarges the ventricles together, as global atrophy does.
Intensities, a smooth bias field, noise, slice thickness and pixel size are random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .radiograph_phantoms import _smooth_field

__all__ = ["BRAIN", "VENTRICLES", "BrainPhantom", "brain_mr_phantom"]

#: Label values.
BRAIN = 1
VENTRICLES = 2


@dataclass(frozen=True)
class BrainPhantom:
    """One generated brain MR series and its truth.

    Attributes
    ----------
    image:
        (slices, rows, columns) float32, arbitrary MR units (T1-weighted look).
    labels:
        Same shape, uint8: 1 brain parenchyma (grey and white matter), 2 ventricles.
    spacing_mm:
        (slice spacing, row spacing, column spacing).
    atrophy:
        The atrophy drawn (0..1).
    """

    image: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]
    atrophy: float

    def volume_ml(self, label: int) -> float:
        """The label's volume in mL."""
        voxel = float(np.prod(self.spacing_mm)) / 1000.0
        return float(np.count_nonzero(self.labels == label)) * voxel

    @property
    def ventricle_to_brain_ratio(self) -> float:
        """Ventricular volume over brain parenchyma volume, from the labels."""
        return self.volume_ml(VENTRICLES) / self.volume_ml(BRAIN)


def _ellipsoid(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    z: npt.NDArray[np.float32],
    centre: tuple[float, float, float],
    axes: tuple[float, float, float],
) -> npt.NDArray[np.float32]:
    """The ellipsoid's level (< 1 inside)."""
    level: npt.NDArray[np.float32] = (
        ((x - centre[0]) / axes[0]) ** 2
        + ((y - centre[1]) / axes[1]) ** 2
        + ((z - centre[2]) / axes[2]) ** 2
    ).astype(np.float32)
    return level


def brain_mr_phantom(
    slices: int = 28,
    size: int = 192,
    seed: int = 0,
    atrophy: float | None = None,
) -> BrainPhantom:
    """Draw one axial brain MR series through the lateral ventricles.

    Parameters
    ----------
    slices:
        Number of axial slices, centred on the ventricles.
    size:
        Rows and columns.
    seed:
        The only source of randomness.
    atrophy:
        0 (none) to 1 (severe); drawn uniformly when ``None``.
    """
    rng = np.random.default_rng(seed)
    a = float(rng.uniform(0.0, 1.0)) if atrophy is None else float(atrophy)
    thickness = float(rng.uniform(3.0, 6.0))
    pixel = float(rng.uniform(0.9, 1.25))
    xs = (np.arange(size, dtype=np.float32) - size / 2 + 0.5) * pixel
    zs = (np.arange(slices, dtype=np.float32) - slices / 2 + 0.5) * thickness
    z, y, x = np.meshgrid(zs + 10.0, xs, xs, indexing="ij")  # centred 10 mm above the AC
    head = (float(rng.uniform(68, 78)), float(rng.uniform(86, 96)), float(rng.uniform(80, 90)))
    shift = (float(rng.uniform(-4, 4)), float(rng.uniform(-4, 4)), 0.0)
    outer = _ellipsoid(x, y, z, shift, head)
    skull = _ellipsoid(x, y, z, shift, tuple(h - 6.0 for h in head))  # type: ignore[arg-type]
    gap = 2.0 + 6.0 * a  # CSF under the skull widens with atrophy
    brain_axes = tuple(h - 7.0 - gap for h in head)
    brain_level = _ellipsoid(x, y, z, shift, brain_axes)  # type: ignore[arg-type]
    # sulci: CSF clefts in the outer grey matter, deeper and wider with atrophy
    field = np.stack([_smooth_field((size, size), 14, rng) for _ in range(slices)])
    depth = 0.80 - 0.12 * a
    sulci = (brain_level > depth) & (brain_level < 1.0) & (field > 0.55 - 0.6 * a)
    brain = (brain_level < 1.0) & ~sulci
    grey = brain & (brain_level > 0.72)
    # lateral ventricles: two ellipsoids beside the midline, bigger with atrophy; the
    # third ventricle: a thin midline slab below them
    vx, vy, vz = 3.0 + 9.0 * a, 22.0 + 8.0 * a, 9.0 + 6.0 * a
    side = 4.0 + 4.5 * a
    ventricles = np.zeros(x.shape, bool)
    for sign in (-1.0, 1.0):
        centre = (shift[0] + sign * side, shift[1] - 4.0, 12.0)
        ventricles |= _ellipsoid(x, y, z, centre, (vx, vy, vz)) < 1.0
    third = _ellipsoid(x, y, z, (shift[0], shift[1] + 2.0, -4.0), (1.0 + 2.0 * a, 12.0, 8.0))
    ventricles |= third < 1.0
    ventricles &= brain_level < 0.8
    labels = np.zeros(x.shape, np.uint8)
    labels[brain] = BRAIN
    labels[ventricles] = VENTRICLES
    # T1-weighted look: WM brightest, GM darker, CSF dark, skull dark, scalp fat bright
    wm, gm = float(rng.uniform(0.75, 0.9)), float(rng.uniform(0.5, 0.62))
    csf, bone = float(rng.uniform(0.08, 0.18)), float(rng.uniform(0.05, 0.12))
    scalp = float(rng.uniform(0.8, 1.0))
    image = np.zeros(x.shape, np.float32)
    image[outer < 1.0] = scalp
    image[skull < 1.0] = bone
    image[(skull < 1.0) & (brain_level < 1.25)] = csf
    image[brain] = wm
    image[grey] = gm
    image[ventricles] = csf
    image *= np.float32(1.0) + np.float32(0.15) * np.stack(
        [_smooth_field((size, size), 4, rng)] * slices
    )
    noise = float(rng.uniform(0.01, 0.04))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise)
    gain = float(rng.uniform(400.0, 3000.0))
    image = np.clip(image, 0.0, None) * np.float32(gain)
    return BrainPhantom(
        image=image.astype(np.float32),
        labels=labels,
        spacing_mm=(thickness, pixel, pixel),
        atrophy=a,
    )
