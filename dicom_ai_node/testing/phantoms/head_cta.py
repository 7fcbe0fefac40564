"""Testing: head CT angiography volumes with labelled arteries and aneurysms.

The training and test data of the built-in aneurysm model (``models/cta_aneurysm``) and
the studies of its tests. Nothing is downloaded: every volume is drawn from a seed.

Drawn in millimetres in patient coordinates (x to the patient's left, y posterior, z
superior, PS3.3 C.7.6.2.1.1), thin axial slices around the circle of Willis: scalp,
skull (and the skull base: petrous bones, clinoid processes), brain, and the contrast-
filled arteries as tubes along jittered paths: both internal carotid arteries rising
from below, the basilar artery, the circle of Willis (posterior communicating arteries,
the anterior communicating artery), and the middle, anterior and posterior cerebral
arteries. Confounders: enhancing venous sinuses (not labelled), calcified plaque in the
carotid siphons, bone next to the vessels. Zero to two saccular aneurysms of 3-14 mm
sit on the arteries, mostly at bifurcations (ICA terminus, anterior communicating
artery, MCA bifurcation, basilar tip), their necks on the parent vessel.

Label values: 1 artery (lumen), 2 aneurysm (the sac outside its parent artery).
Values are Hounsfield units.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ANEURYSM", "ARTERY", "Aneurysm", "CtaPhantom", "cta_phantom"]

_F = npt.NDArray[np.float32]

#: Label values.
ARTERY = 1
ANEURYSM = 2


@dataclass(frozen=True)
class Aneurysm:
    """One drawn aneurysm: where (mm, patient coordinates) and its sac diameter."""

    site: str
    centre_mm: tuple[float, float, float]
    diameter_mm: float


@dataclass(frozen=True)
class CtaPhantom:
    """One generated head CTA and its truth.

    Attributes
    ----------
    hu:
        (slices, rows, columns) float32 Hounsfield units; slice 0 is the lowest.
    labels:
        Same shape, uint8: :data:`ARTERY`, :data:`ANEURYSM`.
    spacing_mm:
        (slice spacing, row spacing, column spacing).
    origin_mm:
        Patient coordinates (x, y, z) of voxel (0, 0, 0)'s centre.
    aneurysms:
        The aneurysms drawn.
    """

    hu: _F
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    aneurysms: tuple[Aneurysm, ...]


class _Grid:
    """Voxel centres in mm, (z, y, x) arrays, with helpers that draw into a volume."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        dz, dy, dx = spacing
        n, rows, cols = shape
        self.origin = (-(cols - 1) / 2 * dx, -(rows - 1) / 2 * dy + 10.0, -(n - 1) / 2 * dz)
        self.z = (np.arange(n, dtype=np.float32) * dz + self.origin[2])[:, None, None]
        self.y = (np.arange(rows, dtype=np.float32) * dy + self.origin[1])[None, :, None]
        self.x = (np.arange(cols, dtype=np.float32) * dx + self.origin[0])[None, None, :]
        self.shape = shape
        self.spacing = spacing

    def box(self, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]) -> tuple[slice, ...]:
        """Index box of the voxels whose centres lie within [lo, hi] (x, y, z in mm)."""
        out = []
        for axis, coords in ((2, self.z), (1, self.y), (0, self.x)):
            values = coords.ravel()
            a = int(np.searchsorted(values, lo[axis], "left"))
            b = int(np.searchsorted(values, hi[axis], "right"))
            out.append(slice(max(0, a), min(len(values), b)))
        return tuple(out)

    def tube(
        self,
        a: npt.NDArray[np.float64],
        b: npt.NDArray[np.float64],
        radius: float,
        mask: npt.NDArray[np.bool_],
    ) -> None:
        """Mark voxels within ``radius`` of the segment a-b (points x, y, z in mm)."""
        lo, hi = np.minimum(a, b) - radius, np.maximum(a, b) + radius
        box = self.box(lo, hi)
        z, y, x = self.z[box[0]], self.y[:, box[1]], self.x[:, :, box[2]]
        v = b - a
        t = ((x - a[0]) * v[0] + (y - a[1]) * v[1] + (z - a[2]) * v[2]) / max(float(v @ v), 1e-9)
        t = np.clip(t, 0.0, 1.0)
        d2 = (x - a[0] - t * v[0]) ** 2 + (y - a[1] - t * v[1]) ** 2 + (z - a[2] - t * v[2]) ** 2
        mask[box] |= d2 <= radius**2

    def ball(
        self,
        centre: npt.NDArray[np.float64],
        radii: npt.NDArray[np.float64],
        mask: npt.NDArray[np.bool_],
    ) -> None:
        """Mark voxels inside the axis-aligned ellipsoid (radii x, y, z in mm)."""
        box = self.box(centre - radii, centre + radii)
        z, y, x = self.z[box[0]], self.y[:, box[1]], self.x[:, :, box[2]]
        level = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
        mask[box] |= (level + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def _path(
    points: list[tuple[float, float, float]],
    rng: np.random.Generator,
    jitter: float = 1.5,
    steps: int = 6,
) -> list[npt.NDArray[np.float64]]:
    """A jittered polyline through ``points``, each leg split into ``steps``."""
    out = [np.asarray(points[0], float)]
    for p, q in itertools.pairwise(points):
        p_, q_ = np.asarray(p, float), np.asarray(q, float)
        for k in range(1, steps + 1):
            point = p_ + (q_ - p_) * k / steps
            if k < steps:
                point = point + rng.normal(0, jitter, 3)
            out.append(point)
    return out


def _arteries(
    rng: np.random.Generator, z0: float
) -> dict[str, tuple[list[npt.NDArray[np.float64]], float]]:
    """Named artery paths (x, y, z mm) with their radii; the circle of Willis at z0."""
    s = rng.uniform(0.9, 1.1)  # head size
    ica_x, ica_y = 13 * s, -2 * s
    term = {side: (side * ica_x, ica_y, z0) for side in (-1, 1)}
    paths: dict[str, tuple[list[npt.NDArray[np.float64]], float]] = {}
    r = {
        "ica": rng.uniform(1.8, 2.4),
        "basilar": rng.uniform(1.4, 1.8),
        "mca": rng.uniform(1.1, 1.5),
        "aca": rng.uniform(0.9, 1.2),
        "pca": rng.uniform(0.9, 1.2),
        "pcom": rng.uniform(0.5, 0.8),
        "acom": rng.uniform(0.6, 0.9),
    }
    for side in (-1, 1):
        name = "right" if side < 0 else "left"
        tx, ty, tz = term[side]
        # the siphon: up from below, a bend forward, then up to the terminus
        paths[f"ica_{name}"] = (
            _path(
                [
                    (tx + side * 4, ty + 10, z0 - 40),
                    (tx + side * 3, ty + 4, z0 - 22),
                    (tx + side * 2, ty - 6, z0 - 12),
                    (tx, ty + 2, z0 - 5),
                    (tx, ty, tz),
                ],
                rng,
                1.0,
            ),
            r["ica"],
        )
        bif = (side * rng.uniform(35, 45) * s, ica_y + rng.uniform(-4, 4), z0 + rng.uniform(2, 6))
        paths[f"mca_{name}"] = (_path([(tx, ty, tz), bif], rng), r["mca"])
        for k in range(2):  # M2 branches
            end = (
                side * rng.uniform(55, 65) * s,
                bif[1] + (k - 0.5) * rng.uniform(14, 24),
                bif[2] + rng.uniform(4, 14),
            )
            paths[f"m2_{name}_{k}"] = (_path([bif, end], rng), r["mca"] * 0.8)
        a1 = (side * rng.uniform(2, 4), ica_y - rng.uniform(14, 18) * s, z0 + rng.uniform(1, 3))
        paths[f"a1_{name}"] = (_path([(tx, ty, tz), a1], rng), r["aca"])
        paths[f"a2_{name}"] = (
            _path(
                [a1, (side * 2.5, a1[1] - 8, a1[2] + 14), (side * 2.5, a1[1] - 4, a1[2] + 30)], rng
            ),
            r["aca"],
        )
        p1 = (side * rng.uniform(5, 8), ica_y + rng.uniform(16, 20) * s, z0 - 1)
        paths[f"pca_{name}"] = (
            _path(
                [
                    (0, p1[1], z0 - 2),
                    p1,
                    (side * 22 * s, p1[1] + 14, z0 + 2),
                    (side * 18 * s, p1[1] + 40, z0 + 6),
                ],
                rng,
            ),
            r["pca"],
        )
        paths[f"pcom_{name}"] = (_path([(tx, ty, tz), p1], rng, 0.8), r["pcom"])
        if side < 0:
            acom_a = a1
        else:
            paths["acom"] = (_path([acom_a, a1], rng, 0.3, 2), r["acom"])
    tip = (0.0, ica_y + rng.uniform(16, 20) * s, z0 - 2)
    paths["basilar"] = (
        _path([(0, tip[1] + 8, z0 - 40), (0, tip[1] + 4, z0 - 20), tip], rng, 1.0),
        r["basilar"],
    )
    return paths


#: Where aneurysms sit (a path name and where along it, 0 start .. 1 end), most often.
_SITES = (
    ("ica_right", 1.0),
    ("ica_left", 1.0),
    ("acom", 0.5),
    ("mca_right", 1.0),
    ("mca_left", 1.0),
    ("basilar", 1.0),
    ("pcom_right", 0.0),
    ("pcom_left", 0.0),
    ("m2_right_0", 0.4),
    ("a2_left", 0.3),
)


def cta_phantom(
    seed: int,
    slices: int | None = None,
    size: int = 256,
    aneurysms: int | None = None,
    diameters_mm: tuple[float, float] = (3.0, 14.0),
) -> CtaPhantom:
    """Draw one head CTA.

    Parameters
    ----------
    seed:
        The random source: the same seed gives the same volume.
    slices:
        Number of axial slices; ``None``: 48-72.
    size:
        Rows and columns.
    aneurysms:
        How many (at distinct sites); ``None``: 0, 1 or 2 (one most often).
    diameters_mm:
        The range the sac diameters are drawn from (uniformly).
    """
    rng = np.random.default_rng([seed, 41])
    slices = slices or int(rng.integers(48, 73))
    dz = float(rng.uniform(0.6, 1.0))
    dxy = float(rng.uniform(0.45, 0.7)) * 256 / size
    g = _Grid((slices, size, size), (dz, dxy, dxy))
    z0 = float(rng.uniform(-0.15, 0.15)) * slices * dz  # circle of Willis height
    hu = np.full(g.shape, -1000.0, np.float32)
    head_a, head_b = float(rng.uniform(68, 78)), float(rng.uniform(85, 98))
    head = ((g.x / head_a) ** 2 + ((g.y - 8) / head_b) ** 2 + ((g.z - z0 - 20) / 110) ** 2) <= 1.0
    inner_a, inner_b = head_a - rng.uniform(9, 13), head_b - rng.uniform(9, 13)
    brain = (
        (g.x / inner_a) ** 2 + ((g.y - 8) / inner_b) ** 2 + ((g.z - z0 - 20) / 100) ** 2
    ) <= 1.0
    hu[head] = float(rng.uniform(30, 50))  # scalp
    skull = head & ~brain & (((g.x / (head_a - 2)) ** 2 + ((g.y - 8) / (head_b - 2)) ** 2) <= 1.0)
    hu[skull] = float(rng.uniform(900, 1600))
    hu[brain] = float(rng.uniform(28, 40))
    # skull base below the circle of Willis: petrous ridges and clinoid processes
    bone = np.zeros(g.shape, bool)
    for side in (-1, 1):
        g.ball(np.array([side * 30.0, 12.0, z0 - 16]), np.array([16.0, 7.0, 6.0]), bone)
        g.ball(np.array([side * 9.0, -4.0, z0 - 8]), np.array([3.0, 3.0, 3.5]), bone)
    hu[bone & brain] = float(rng.uniform(700, 1400))
    # venous sinuses: enhancing, not arteries (the straight and transverse sinuses)
    veins = np.zeros(g.shape, bool)
    back = float(inner_b + 8 - 3)
    g.tube(np.array([0.0, back - 4, z0 - 20]), np.array([0.0, back - 25, z0 + 40]), 3.0, veins)
    for side in (-1, 1):
        g.tube(
            np.array([0.0, back - 2, z0 - 6]),
            np.array([side * 45.0, back - 20, z0 - 14]),
            3.5,
            veins,
        )
    hu[veins & brain] = float(rng.uniform(120, 250))
    lumen = np.zeros(g.shape, bool)
    paths = _arteries(rng, z0)
    for points, radius in paths.values():
        for a, b in itertools.pairwise(points):
            g.tube(a, b, radius, lumen)
    contrast = float(rng.uniform(250, 550))
    hu[lumen] = contrast
    sac = np.zeros(g.shape, bool)
    drawn: list[Aneurysm] = []
    count = aneurysms if aneurysms is not None else int(rng.choice(3, p=[0.25, 0.5, 0.25]))
    for k in rng.permutation(len(_SITES))[:count]:
        name, where = _SITES[int(k)]
        points, radius = paths[name]
        at = points[round(where * (len(points) - 1))]
        diameter = float(rng.uniform(*diameters_mm))
        direction = rng.normal(0, 1, 3)
        direction /= np.linalg.norm(direction)
        centre = at + direction * (radius + 0.35 * diameter)
        radii = diameter / 2 * rng.uniform(0.85, 1.15, 3)
        g.ball(centre, radii, sac)
        g.tube(at, centre, min(radius * 1.5, diameter / 2), sac)  # the neck
        drawn.append(
            Aneurysm(name, (float(centre[0]), float(centre[1]), float(centre[2])), diameter)
        )
    hu[sac] = contrast
    # calcified plaque in the carotid siphons: bright, not lumen
    for ica in ("ica_right", "ica_left"):
        if rng.random() < 0.4:
            points, radius = paths[ica]
            at = points[int(rng.integers(2, len(points) - 3))]
            plaque = np.zeros(g.shape, bool)
            g.ball(at + rng.normal(0, radius * 0.6, 3), np.full(3, rng.uniform(0.8, 1.6)), plaque)
            hu[plaque] = float(rng.uniform(700, 1200))
    labels = np.zeros(g.shape, np.uint8)
    labels[lumen] = ARTERY
    labels[sac & ~lumen] = ANEURYSM
    # blur (partial volume) and noise
    kernel = np.array([0.25, 0.5, 0.25], np.float32)
    for axis in (1, 2):
        hu = np.roll(hu, 1, axis) * kernel[0] + hu * kernel[1] + np.roll(hu, -1, axis) * kernel[2]
    hu = hu + rng.normal(0, float(rng.uniform(6, 18)), g.shape).astype(np.float32)
    return CtaPhantom(hu.astype(np.float32), labels, (dz, dxy, dxy), g.origin, tuple(drawn))
