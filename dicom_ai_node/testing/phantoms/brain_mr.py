"""Testing: axial brain MR (T1-weighted look) with labelled brain and ventricles.

The training and test data of the built-in brain atrophy model (``models/mr_brain_atrophy``)
and the studies of its tests. Nothing is downloaded: every volume is drawn from a seed.

The anatomy is drawn in millimetres in patient coordinates (x to the patient's left, y
posterior, z superior, PS3.3 C.7.6.2.1.1): scalp and skull, the brain with a grey matter
rim over white matter, sulcal CSF at the surface, and the lateral and third ventricles.
An ``atrophy`` parameter (0 = none, 1 = severe) widens the CSF gap under the skull and the
sulci, shrinks the brain and enlarges the ventricles together, as global atrophy does.

Below the ventricles, each medial temporal lobe holds a hippocampus (grey matter) in a
thin CSF cleft (the choroid fissure and the cisterns around it, drawn as one pocket) with
the inferior (temporal) horn of the lateral ventricle above and lateral to it. A separate
``medial_atrophy`` parameter (0..1) shrinks the hippocampi, widens the pocket and
enlarges the temporal horns together, the signs that the Scheltens medial temporal lobe
atrophy (MTA) scale grades by eye (0: none; 1: wider choroid fissure; 2: also a wider
temporal horn; 3: moderate, 4: severe loss of hippocampal height). Its truth grade is
``int(5 * medial_atrophy)`` (0..4), and :func:`hippocampal_occupancy` gives the
hippocampal occupancy (hippocampus / (hippocampus + temporal horn), as in NeuroQuant's
HOC) of the drawn ellipsoids, from which the model's grade bands are set.

Intensities, a smooth bias field, noise, slice thickness and pixel size are random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import ellipsoid, smooth_field

__all__ = [
    "BRAIN",
    "LEFT_HIPPOCAMPUS",
    "LEFT_TEMPORAL_HORN",
    "RIGHT_HIPPOCAMPUS",
    "RIGHT_TEMPORAL_HORN",
    "VENTRICLES",
    "BrainPhantom",
    "brain_mr_phantom",
    "hippocampal_occupancy",
    "mta_grade",
]

#: Label values.
BRAIN = 1
VENTRICLES = 2
RIGHT_HIPPOCAMPUS = 3
LEFT_HIPPOCAMPUS = 4
RIGHT_TEMPORAL_HORN = 5
LEFT_TEMPORAL_HORN = 6
#: Parenchyma and ventricular CSF labels, for the ventricle-to-brain ratio.
PARENCHYMA = (BRAIN, RIGHT_HIPPOCAMPUS, LEFT_HIPPOCAMPUS)
VENTRICULAR = (VENTRICLES, RIGHT_TEMPORAL_HORN, LEFT_TEMPORAL_HORN)


@dataclass(frozen=True)
class BrainPhantom:
    """One generated brain MR series and its truth.

    Attributes
    ----------
    image:
        (slices, rows, columns) float32, arbitrary MR units (T1-weighted look).
    labels:
        Same shape, uint8: 1 brain parenchyma (grey and white matter) but the
        hippocampi, 2 lateral and third ventricles but the temporal horns, 3 and 4 right
        and left hippocampus, 5 and 6 right and left temporal horn.
    spacing_mm:
        (slice spacing, row spacing, column spacing).
    atrophy:
        The global atrophy drawn (0..1).
    medial_atrophy:
        The medial temporal atrophy drawn (0..1); :attr:`mta_grade` is its grade.
    """

    image: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]
    atrophy: float
    medial_atrophy: float = 0.0

    def volume_ml(self, *labels: int) -> float:
        """The labels' volume in mL."""
        voxel = float(np.prod(self.spacing_mm)) / 1000.0
        return float(np.count_nonzero(np.isin(self.labels, labels))) * voxel

    @property
    def ventricle_to_brain_ratio(self) -> float:
        """Ventricular volume over brain parenchyma volume, from the labels."""
        return self.volume_ml(*VENTRICULAR) / self.volume_ml(*PARENCHYMA)

    @property
    def mta_grade(self) -> int:
        """The MTA-style grade drawn (both sides alike), 0..4."""
        return mta_grade(self.medial_atrophy)

    def occupancy(self, hippocampus: int, horn: int) -> float:
        """Hippocampal occupancy of one side from the labels (voxels)."""
        h = int(np.count_nonzero(self.labels == hippocampus))
        v = int(np.count_nonzero(self.labels == horn))
        return float(h / max(1, h + v))


def mta_grade(medial_atrophy: float) -> int:
    """The truth grade of a medial atrophy 0..1: five equal bands, 0..4."""
    return min(4, int(5 * medial_atrophy))


def _medial_temporal(
    m: float,
) -> tuple[tuple[float, float, float], float, tuple[float, float, float], float]:
    """Hippocampus axes, its CSF pocket margin, temporal horn axes and the horn's lateral
    offset (mm), for a medial atrophy ``m``."""
    shrink = 1.0 - 0.45 * m
    hippocampus = (5.5 * shrink, 17.0 * shrink, 4.5 * shrink)
    pocket = 0.6 + 2.5 * m
    horn = (0.9 + 3.0 * m, 14.0 + 4.0 * m, 1.6 + 3.4 * m)
    return hippocampus, pocket, horn, hippocampus[0] + pocket + horn[0] - 1.0


def hippocampal_occupancy(medial_atrophy: float) -> float:
    """Hippocampal occupancy of the drawn ellipsoids (continuous, one side).

    Hippocampal volume over hippocampal plus temporal horn volume; the ellipsoids'
    volumes (the 4/3 pi cancels). The model's MTA-style grade bands are this function
    at the band edges 0.2, 0.4, 0.6 and 0.8 (``models/mr_brain_atrophy/model.toml``).
    """
    hippocampus, _, horn, _ = _medial_temporal(medial_atrophy)
    h = float(np.prod(hippocampus))
    return h / (h + float(np.prod(horn)))


def brain_mr_phantom(
    slices: int = 28,
    size: int = 192,
    seed: int = 0,
    atrophy: float | None = None,
    medial_atrophy: float | None = None,
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
    medial_atrophy:
        0 (none) to 1 (severe); drawn uniformly when ``None``, from its own stream (the
        other draws of a seed are those of the phantoms before the hippocampi).
    """
    rng = np.random.default_rng(seed)
    a = float(rng.uniform(0.0, 1.0)) if atrophy is None else float(atrophy)
    m = (
        float(np.random.default_rng([seed, 1]).uniform(0.0, 1.0))
        if medial_atrophy is None
        else float(medial_atrophy)
    )
    thickness = float(rng.uniform(3.0, 6.0))
    pixel = float(rng.uniform(0.9, 1.25))
    xs = (np.arange(size, dtype=np.float32) - size / 2 + 0.5) * pixel
    zs = (np.arange(slices, dtype=np.float32) - slices / 2 + 0.5) * thickness
    z, y, x = np.meshgrid(zs + 10.0, xs, xs, indexing="ij")  # centred 10 mm above the AC
    head = (float(rng.uniform(68, 78)), float(rng.uniform(86, 96)), float(rng.uniform(80, 90)))
    shift = (float(rng.uniform(-4, 4)), float(rng.uniform(-4, 4)), 0.0)
    outer = ellipsoid(x, y, z, shift, head)
    skull = ellipsoid(x, y, z, shift, tuple(h - 6.0 for h in head))  # type: ignore[arg-type]
    gap = 2.0 + 6.0 * a  # CSF under the skull widens with atrophy
    brain_axes = tuple(h - 7.0 - gap for h in head)
    brain_level = ellipsoid(x, y, z, shift, brain_axes)  # type: ignore[arg-type]
    # sulci: CSF clefts in the outer grey matter, deeper and wider with atrophy
    field = np.stack([smooth_field((size, size), 14, rng) for _ in range(slices)])
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
        ventricles |= ellipsoid(x, y, z, centre, (vx, vy, vz)) < 1.0
    third = ellipsoid(x, y, z, (shift[0], shift[1] + 2.0, -4.0), (1.0 + 2.0 * a, 12.0, 8.0))
    ventricles |= third < 1.0
    ventricles &= brain_level < 0.8
    # medial temporal lobes: hippocampus in its CSF pocket, temporal horn above-lateral
    hipp_axes, pocket, horn_axes, horn_dx = _medial_temporal(m)
    pocket_axes = tuple(h + pocket for h in hipp_axes)
    clefts = np.zeros(x.shape, bool)
    sides = []
    for sign, hipp_label, horn_label in (
        (-1.0, RIGHT_HIPPOCAMPUS, RIGHT_TEMPORAL_HORN),
        (1.0, LEFT_HIPPOCAMPUS, LEFT_TEMPORAL_HORN),
    ):
        centre = (shift[0] + sign * 27.0, shift[1] + 14.0, -12.0)
        clefts |= ellipsoid(x, y, z, centre, pocket_axes) < 1.0  # type: ignore[arg-type]
        hipp = ellipsoid(x, y, z, centre, hipp_axes) < 1.0
        horn_centre = (centre[0] + sign * horn_dx, centre[1] - 2.0, -12.0 + 0.5 * hipp_axes[2])
        horn = ellipsoid(x, y, z, horn_centre, horn_axes) < 1.0
        sides.append((hipp, hipp_label, horn, horn_label))
    brain &= ~clefts
    labels = np.zeros(x.shape, np.uint8)
    labels[brain] = BRAIN
    labels[ventricles] = VENTRICLES
    hippocampi = np.zeros(x.shape, bool)
    horns = np.zeros(x.shape, bool)
    for hipp, hipp_label, horn, horn_label in sides:
        labels[horn] = horn_label
        labels[hipp & ~horn] = hipp_label
        hippocampi |= hipp & ~horn
        horns |= horn
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
    image[clefts] = csf
    image[hippocampi] = gm
    image[ventricles | horns] = csf
    image *= np.float32(1.0) + np.float32(0.15) * np.stack(
        [smooth_field((size, size), 4, rng)] * slices
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
        medial_atrophy=m,
    )
