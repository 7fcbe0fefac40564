"""Testing: axial liver MR (T2-weighted look) with labelled lesions of three kinds.

The training and test data of the built-in liver lesion model (``models/mr_liver_lesion``)
and the studies of its tests. Nothing is downloaded: every volume is drawn from a seed.

Drawn in millimetres in patient coordinates (x to the patient's left, y posterior, z
superior, PS3.3 C.7.6.2.1.1): the abdominal wall with bright fat, the liver (on the
patient's right, the image's left), the spleen, both kidneys, the spine, the aorta and the
inferior vena cava (dark flow voids), the gallbladder and fluid in the stomach (bright
fluid outside the liver: what a lesion detector must not call a cyst). Lesions in the
liver, 0-3 of them, of three kinds with the look they have on T2-weighted images:

* **cyst**: very bright, homogeneous, round, sharp;
* **haemangioma**: bright (less than a cyst), lobulated margin, a little heterogeneous;
* **metastasis**: intermediate, a brighter rim or a darker core (a target), irregular.

Tissue intensities (each drawn around its usual rank), a coil bias field, Rician noise,
slice thickness and pixel size are random. Label values: 1 liver, 2 cyst, 3
haemangioma, 4 metastasis (lesions are not liver). Values are arbitrary MR units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import blur, ellipsoid, smooth_field

__all__ = [
    "CYST",
    "HAEMANGIOMA",
    "KINDS",
    "LIVER",
    "METASTASIS",
    "LiverLesion",
    "LiverPhantom",
    "liver_mr_phantom",
]

_F = npt.NDArray[np.float32]

#: Label values.
LIVER = 1
CYST = 2
HAEMANGIOMA = 3
METASTASIS = 4
#: Lesion kinds by label value.
KINDS = {CYST: "cyst", HAEMANGIOMA: "haemangioma", METASTASIS: "metastasis"}


@dataclass(frozen=True)
class LiverLesion:
    """One drawn lesion: its kind (label value), centre (mm) and diameter."""

    kind: int
    centre_mm: tuple[float, float, float]
    diameter_mm: float


@dataclass(frozen=True)
class LiverPhantom:
    """One generated liver MR series and its truth.

    Attributes
    ----------
    image:
        (slices, rows, columns) float32, arbitrary MR units; slice 0 is the lowest.
    labels:
        Same shape, uint8: :data:`LIVER`, :data:`CYST`, :data:`HAEMANGIOMA`,
        :data:`METASTASIS`.
    spacing_mm:
        (slice spacing, row spacing, column spacing).
    lesions:
        The lesions drawn.
    """

    image: _F
    labels: npt.NDArray[np.uint8]
    spacing_mm: tuple[float, float, float]
    lesions: tuple[LiverLesion, ...]


def liver_mr_phantom(
    seed: int,
    slices: int | None = None,
    size: int | None = None,
    lesions: int | None = None,
    kinds: tuple[int, ...] | None = None,
) -> LiverPhantom:
    """Draw one axial liver MR series.

    Parameters
    ----------
    seed:
        The random source: the same seed gives the same volume.
    slices:
        ``None``: 20-32.
    size:
        Rows and columns; ``None``: 192 or 256.
    lesions:
        How many; ``None``: 0-3 (one most often).
    kinds:
        The kind of each lesion (label values); ``None``: drawn.
    """
    rng = np.random.default_rng([seed, 53])
    slices = slices or int(rng.integers(20, 33))
    size = size or int(rng.choice([192, 256]))
    dz = float(rng.uniform(5.0, 7.0))
    dxy = float(rng.uniform(1.3, 1.8)) * 256 / size
    z = ((np.arange(slices, dtype=np.float32) - (slices - 1) / 2) * dz)[:, None, None]
    y = ((np.arange(size, dtype=np.float32) - (size - 1) / 2) * dxy)[None, :, None]
    x = ((np.arange(size, dtype=np.float32) - (size - 1) / 2) * dxy)[None, None, :]
    shape = (slices, size, size)
    gain = {
        "fat": rng.uniform(0.65, 0.85),
        "muscle": rng.uniform(0.15, 0.25),
        "liver": rng.uniform(0.25, 0.35),
        "spleen": rng.uniform(0.45, 0.6),
        "kidney": rng.uniform(0.45, 0.6),
        "fluid": rng.uniform(0.9, 1.0),
        "bone": rng.uniform(0.2, 0.3),
    }
    image = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    a, b = float(rng.uniform(150, 175)), float(rng.uniform(105, 125))
    body = ellipsoid(x, y, z, (0, 5, 0), (a, b, 1e6)) <= 1
    inner = ellipsoid(x, y, z, (0, 5, 0), (a - 15, b - 15, 1e6)) <= 1
    image[body] = gain["fat"]
    wall = inner & (ellipsoid(x, y, z, (0, 5, 0), (a - 25, b - 25, 1e6)) > 1)
    image[wall] = gain["muscle"]
    bowel = float(rng.uniform(0.35, 0.5)) * (1 + 0.3 * smooth_field((size, size), 18, rng))
    image[inner & ~wall] = np.broadcast_to(bowel, shape)[inner & ~wall]
    liver_c = (float(-rng.uniform(45, 60)), float(rng.uniform(-10, 5)), float(rng.uniform(-10, 25)))
    liver_r = (float(rng.uniform(70, 90)), float(rng.uniform(65, 80)), float(rng.uniform(80, 110)))
    wobble = 0.08 * np.stack([smooth_field((size, size), 5, rng)] * slices)
    liver = (ellipsoid(x, y, z, liver_c, liver_r) <= 1 + wobble) & inner & ~wall
    liver &= ~(x > liver_c[0] + liver_r[0] * rng.uniform(0.55, 0.8))  # the left lobe ends
    image[liver] = gain["liver"]
    labels[liver] = LIVER
    spleen = (
        ellipsoid(
            x, y, z, (float(rng.uniform(70, 90)), 40, float(rng.uniform(10, 40))), (35, 45, 55)
        )
        <= 1
    )
    image[spleen & inner & ~liver] = gain["spleen"]
    for side in (-1, 1):
        kidney = (
            ellipsoid(x, y, z, (side * 55.0, 55.0, float(rng.uniform(-60, -30))), (25, 30, 50)) <= 1
        )
        image[kidney & inner] = gain["kidney"]
    spine = ellipsoid(x, y, z, (0, 70, 0), (22, 20, 1e6)) <= 1
    image[spine] = gain["bone"]
    for cx, cy, r in ((12.0, 40.0, 11.0), (-22.0, 30.0, 12.0)):  # aorta, vena cava
        image[ellipsoid(x, y, z, (cx, cy, 0), (r, r, 1e6)) <= 1] = 0.03
    gallbladder = (
        ellipsoid(x, y, z, (liver_c[0] + 35, liver_c[1] - 40, liver_c[2] - 40), (15, 18, 35)) <= 1
    )
    image[gallbladder & inner] = gain["fluid"]
    labels[gallbladder & liver] = 0  # fluid outside the liver's parenchyma
    stomach = ellipsoid(x, y, z, (50.0, -30.0, 40.0), (35, 30, 40)) <= 1
    image[stomach & inner & ~liver] = gain["fluid"] * 0.9
    drawn: list[LiverLesion] = []
    count = lesions if lesions is not None else int(rng.choice(4, p=[0.15, 0.45, 0.25, 0.15]))
    inside = np.argwhere(liver & ~gallbladder)
    for k in range(count):
        kind = kinds[k] if kinds is not None else int(rng.choice([CYST, HAEMANGIOMA, METASTASIS]))
        diameter = float(rng.uniform(8.0, 35.0))
        for _ in range(20):
            zi, yi, xi = inside[int(rng.integers(len(inside)))]
            centre = (float(x[0, 0, xi]), float(y[0, yi, 0]), float(z[zi, 0, 0]))
            radius = diameter / 2
            level = ellipsoid(x, y, z, centre, (radius, radius * rng.uniform(0.8, 1.2), radius))
            if kind == HAEMANGIOMA:
                level = level / (
                    1 + 0.15 * np.stack([smooth_field((size, size), 10, rng)] * slices)
                )
            elif kind == METASTASIS:
                level = level / (1 + 0.1 * np.stack([smooth_field((size, size), 14, rng)] * slices))
            mask = level <= 1
            if mask.any() and liver[mask].mean() > 0.9 and not (labels[mask] > LIVER).any():
                break
        else:
            continue
        if kind == CYST:
            image[mask] = gain["fluid"]
        elif kind == HAEMANGIOMA:
            texture = 1 + 0.08 * np.stack([smooth_field((size, size), 30, rng)] * slices)
            image[mask] = (gain["fluid"] * float(rng.uniform(0.7, 0.82)) * texture)[mask]
        else:
            core = float(rng.uniform(0.4, 0.55))
            rim = core + float(rng.choice([-1, 1])) * float(rng.uniform(0.1, 0.2))
            image[mask] = np.where(level[mask] > 0.55, rim, core)
        labels[mask] = kind
        drawn.append(LiverLesion(kind, centre, diameter))
    bias = 1 + 0.2 * smooth_field((size, size), 4, rng)
    out = np.empty(shape, np.float32)
    scale = float(rng.uniform(300, 2500))
    noise = float(rng.uniform(0.01, 0.04))
    for k in range(slices):
        plane = blur(image[k], 0.6) * bias
        out[k] = (
            np.abs(
                plane
                + noise
                * (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size)))
            )
            * scale
        )
    return LiverPhantom(out, labels, (dz, dxy, dxy), tuple(drawn))
