"""Testing: axial CT slices of the head, neck, chest, abdomen and pelvis.

The training and test data of the built-in body-region model (``models/body_region``):
each slice is drawn in millimetres from randomised ellipses (body outline, fat, bones,
air spaces, organs) with the Hounsfield values of their tissues, then given a random
field of view, position, noise and blur, in the spirit of domain-randomised training.
They look like cartoons of CT, not like patients; the model card says what follows from
that. ``z`` (0 caudal .. 1 cranial) moves through a region: orbits and sinuses at the
skull base, the liver in the upper abdomen, bowel lower down, the femoral heads low in
the pelvis.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...domain import BodyPart
from .fields import box_blur

__all__ = [
    "REGIONS",
    "Canvas",
    "draw_abdomen",
    "draw_table",
    "region_anatomy",
    "region_ct",
    "region_slice",
]

#: The regions drawn, in the order of the model's outputs.
REGIONS = (BodyPart.HEAD, BodyPart.NECK, BodyPart.CHEST, BodyPart.ABDOMEN, BodyPart.PELVIS)

_F = npt.NDArray[np.float32]
_B = npt.NDArray[np.bool_]


class Canvas:
    """An image in HU with a millimetre grid centred on the body."""

    def __init__(self, size: int, pixel_mm: float, rng: np.random.Generator) -> None:
        self.rng = rng
        half = size * pixel_mm / 2
        axis = np.linspace(-half, half, size, dtype=np.float32)
        self.x, self.y = np.meshgrid(axis, axis)
        self.x -= rng.uniform(-0.08, 0.08) * half  # the body is not always centred
        self.y -= rng.uniform(-0.08, 0.08) * half
        turn = rng.uniform(-0.15, 0.15)  # a few degrees of rotation
        self.x, self.y = (
            self.x * np.cos(turn) - self.y * np.sin(turn),
            self.x * np.sin(turn) + self.y * np.cos(turn),
        )
        self.hu: _F = np.full((size, size), -1000.0, np.float32)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float) -> _B:
        """Pixels inside the ellipse (centre and half axes in mm)."""
        inside: _B = ((self.x - cx) / ax) ** 2 + ((self.y - cy) / ay) ** 2 < 1.0
        return inside

    def paint(self, mask: _B, hu: float, sd: float = 0.0) -> None:
        """Set ``mask`` to ``hu``, with Gaussian texture of ``sd`` HU."""
        noise = self.rng.normal(0.0, sd, mask.sum()).astype(np.float32) if sd else 0.0
        self.hu[mask] = hu + noise

    def u(self, low: float, high: float) -> float:
        """A uniform draw from the canvas's generator."""
        return float(self.rng.uniform(low, high))


def _body(c: Canvas, ax: float, ay: float, fat_mm: float) -> tuple[_B, _B]:
    """Skin and subcutaneous fat, then muscle inside; returns (body, inside) masks."""
    body = c.ellipse(0, 0, ax, ay)
    c.paint(body, c.u(-120, -80), 8)
    inside = c.ellipse(0, c.u(-3, 3), ax - fat_mm, ay - fat_mm * c.u(0.7, 1.1))
    c.paint(inside, c.u(35, 60), 10)
    return body, inside


def _spine(c: Canvas, cy: float, r: float) -> None:
    c.paint(c.ellipse(0, cy, r, r * c.u(0.8, 1.0)), c.u(250, 600), 60)
    c.paint(c.ellipse(0, cy + r * 1.5, r * 0.45, r * 0.4), c.u(20, 40), 5)  # canal
    c.paint(c.ellipse(0, cy + r * 2.1, r * 0.5, r * 0.35), c.u(300, 700), 60)  # lamina


def draw_table(c: Canvas, y: float) -> None:
    """The patient table below ``y`` mm (seven times in ten)."""
    if c.rng.random() < 0.7:
        band = (c.y > y) & (c.y < y + c.u(3, 8)) & (np.abs(c.x) < c.u(150, 220))
        c.paint(band, c.u(-200, 300), 20)


def _head(c: Canvas, z: float) -> float:
    ax, ay = c.u(65, 82), c.u(82, 100)
    scale = 0.55 + 0.45 * np.sqrt(max(0.05, 1 - (2 * z - 1.2) ** 2)) if z > 0.6 else 1.0
    ax, ay = ax * scale, ay * scale
    c.paint(c.ellipse(0, 0, ax + c.u(3, 7), ay + c.u(3, 7)), c.u(20, 50), 10)  # scalp
    c.paint(c.ellipse(0, 0, ax, ay), c.u(900, 1700), 120)  # skull
    t = c.u(4, 9)
    brain = c.ellipse(0, 0, ax - t, ay - t)
    c.paint(brain, c.u(25, 42), 6)
    if z > 0.3 and c.rng.random() < 0.8:  # lateral ventricles
        for side in (-1, 1):
            c.paint(
                c.ellipse(side * c.u(4, 10), c.u(-15, 5), c.u(3, 8), c.u(12, 25)), c.u(0, 12), 3
            )
    if z < 0.35:  # skull base: orbits, sinuses, mastoid air
        for side in (-1, 1):
            c.paint(
                c.ellipse(side * c.u(22, 32), -ay * c.u(0.7, 0.85), c.u(12, 17), c.u(12, 17)),
                c.u(-100, 20),
                10,
            )
        c.paint(c.ellipse(0, -ay * c.u(0.55, 0.75), c.u(8, 16), c.u(6, 12)), -950, 20)
    return ay


def _neck(c: Canvas, z: float) -> float:
    ax, ay = c.u(50, 72), c.u(45, 62)
    if z < 0.3 and c.rng.random() < 0.7:  # base of the neck: shoulders
        for side in (-1, 1):
            c.paint(
                c.ellipse(side * c.u(80, 110), c.u(-5, 10), c.u(30, 45), c.u(25, 35)),
                c.u(35, 55),
                10,
            )
            c.paint(
                c.ellipse(side * c.u(50, 80), -c.u(5, 20), c.u(18, 30), c.u(4, 7)),
                c.u(400, 900),
                80,
            )
    _body(c, ax, ay, c.u(4, 12))
    c.paint(c.ellipse(0, -ay * c.u(0.3, 0.5), c.u(6, 10), c.u(6, 10)), -980, 10)  # trachea
    for side in (-1, 1):  # thyroid lobes, carotids
        c.paint(
            c.ellipse(side * c.u(12, 18), -ay * c.u(0.3, 0.45), c.u(6, 10), c.u(8, 12)),
            c.u(80, 130),
            10,
        )
        c.paint(
            c.ellipse(side * c.u(22, 30), -ay * c.u(0.1, 0.3), c.u(3, 5), c.u(3, 5)),
            c.u(40, 300),
            10,
        )
    _spine(c, ay * c.u(0.1, 0.3), c.u(9, 13))
    return ay


def _chest(c: Canvas, z: float) -> float:
    ax, ay = c.u(135, 180), c.u(95, 130)
    _, inside = _body(c, ax, ay, c.u(8, 30))
    lung_ay = ay * c.u(0.55, 0.75) * (0.6 + 0.4 * np.sin(np.pi * (0.15 + 0.85 * z)))
    for side in (-1, 1):
        lung = (
            c.ellipse(side * ax * c.u(0.38, 0.5), c.u(-10, 10), ax * c.u(0.3, 0.4), lung_ay)
            & inside
        )
        c.paint(lung, c.u(-880, -720), 30)
        for _ in range(int(c.u(3, 12))):  # vessels
            vx, vy = side * ax * c.u(0.25, 0.6), c.u(-lung_ay, lung_ay) * 0.8
            c.paint(c.ellipse(vx, vy, c.u(1, 4), c.u(1, 4)) & lung, c.u(20, 60), 5)
    if z < 0.8:  # heart, between and in front of the lungs
        c.paint(
            c.ellipse(
                ax * c.u(0.0, 0.12), -ay * c.u(0.1, 0.3), ax * c.u(0.2, 0.3), ay * c.u(0.3, 0.45)
            ),
            c.u(30, 55),
            8,
        )
    for angle in np.linspace(0.2, np.pi - 0.2, int(c.u(6, 12))):  # ribs
        rx, ry = (
            np.cos(angle) * ax * 0.92,
            np.sin(angle) * ay * 0.92 * (1 if c.rng.random() < 0.5 else -1),
        )
        c.paint(c.ellipse(rx, ry, c.u(3, 6), c.u(3, 6)), c.u(300, 800), 60)
    _spine(c, ay * c.u(0.55, 0.7), c.u(12, 17))
    if c.rng.random() < 0.4:  # arms down at the sides
        for side in (-1, 1):
            c.paint(
                c.ellipse(side * (ax + c.u(30, 50)), c.u(-10, 20), c.u(25, 40), c.u(25, 40)),
                c.u(35, 55),
                10,
            )
    return ay


def draw_abdomen(c: Canvas, z: float, kidneys: bool = True) -> float:
    """An abdomen at level ``z``, with or without kidneys; returns its posterior extent (mm)."""
    ax, ay = c.u(135, 190), c.u(100, 140)
    _, inside = _body(c, ax, ay, c.u(10, 45))
    if z > 0.45:  # upper abdomen: liver (patient's right = image left), spleen, stomach
        c.paint(
            c.ellipse(-ax * c.u(0.3, 0.45), c.u(-20, 10), ax * c.u(0.35, 0.5), ay * c.u(0.5, 0.7))
            & inside,
            c.u(50, 70),
            8,
        )
        c.paint(
            c.ellipse(
                ax * c.u(0.45, 0.6), ay * c.u(0.1, 0.3), ax * c.u(0.12, 0.2), ay * c.u(0.2, 0.3)
            )
            & inside,
            c.u(40, 55),
            8,
        )
        if c.rng.random() < 0.6:
            c.paint(
                c.ellipse(ax * c.u(0.1, 0.35), -ay * c.u(0.3, 0.5), c.u(20, 40), c.u(10, 25))
                & inside,
                -980,
                10,
            )
    if kidneys and 0.2 < z < 0.8:  # kidneys
        for side in (-1, 1):
            c.paint(
                c.ellipse(side * ax * c.u(0.3, 0.42), ay * c.u(0.2, 0.35), c.u(18, 28), c.u(25, 35))
                & inside,
                c.u(25, 45),
                8,
            )
    for _ in range(int(c.u(4, 16) if z < 0.5 else c.u(0, 6))):  # bowel gas and fluid
        gx, gy = c.u(-0.6, 0.6) * ax, c.u(-0.6, 0.3) * ay
        c.paint(
            c.ellipse(gx, gy, c.u(5, 18), c.u(5, 14)) & inside,
            -950 if c.rng.random() < 0.6 else c.u(0, 30),
            15,
        )
    c.paint(
        c.ellipse(c.u(-8, 8), ay * c.u(0.3, 0.45), c.u(8, 13), c.u(8, 13)), c.u(35, 200), 10
    )  # aorta
    _spine(c, ay * c.u(0.5, 0.65), c.u(14, 20))
    return ay


def _pelvis(c: Canvas, z: float) -> float:
    ax, ay = c.u(150, 200), c.u(95, 130)
    _, inside = _body(c, ax, ay, c.u(10, 40))
    if z > 0.5:  # iliac wings
        for side in (-1, 1):
            wing = c.ellipse(
                side * ax * c.u(0.45, 0.6),
                ay * c.u(0.0, 0.25),
                ax * c.u(0.12, 0.2),
                ay * c.u(0.35, 0.5),
            )
            c.paint(
                wing
                & ~c.ellipse(side * ax * c.u(0.42, 0.55), ay * c.u(-0.05, 0.2), ax * 0.1, ay * 0.3),
                c.u(300, 800),
                80,
            )
        _spine(c, ay * c.u(0.5, 0.65), c.u(16, 22))  # sacrum
    else:  # femoral heads, bladder, rectum
        for side in (-1, 1):
            r = c.u(20, 27)
            c.paint(c.ellipse(side * ax * c.u(0.5, 0.62), c.u(-10, 15), r, r), c.u(300, 700), 60)
        c.paint(
            c.ellipse(c.u(-10, 10), -ay * c.u(0.2, 0.45), c.u(25, 50), c.u(20, 40)) & inside,
            c.u(0, 15),
            5,
        )
        c.paint(
            c.ellipse(c.u(-6, 6), ay * c.u(0.35, 0.5), c.u(8, 15), c.u(8, 15)) & inside,
            -950 if c.rng.random() < 0.5 else 30,
            10,
        )
    for _ in range(int(c.u(0, 6))):
        c.paint(
            c.ellipse(c.u(-0.5, 0.5) * ax, c.u(-0.5, 0.2) * ay, c.u(5, 14), c.u(5, 12)) & inside,
            -950,
            15,
        )
    return ay


_DRAW = {
    BodyPart.HEAD: _head,
    BodyPart.NECK: _neck,
    BodyPart.CHEST: _chest,
    BodyPart.ABDOMEN: draw_abdomen,
    BodyPart.PELVIS: _pelvis,
}
#: Typical field of view (mm) of each region's scans.
_FOV = {
    BodyPart.HEAD: (200.0, 280.0),
    BodyPart.NECK: (180.0, 300.0),
    BodyPart.CHEST: (330.0, 500.0),
    BodyPart.ABDOMEN: (330.0, 500.0),
    BodyPart.PELVIS: (350.0, 500.0),
}


def region_anatomy(
    region: BodyPart, size: int, z: float, rng: np.random.Generator, fov_mm: float | None = None
) -> _F:
    """The tissues of one axial slice of ``region`` in HU, before blur and scanner noise.

    The parameters are those of :func:`region_slice`; the MR and radiograph generators
    give these tissues their own contrast.
    """
    low, high = _FOV[region]
    fov = fov_mm if fov_mm is not None else float(rng.uniform(low, high))
    canvas = Canvas(size, fov / size, rng)
    bottom = _DRAW[region](canvas, z)
    draw_table(canvas, bottom + canvas.u(5, 30))
    return canvas.hu


def region_slice(
    region: BodyPart, size: int, z: float, rng: np.random.Generator, fov_mm: float | None = None
) -> _F:
    """One axial slice of ``region`` at level ``z`` (0 caudal .. 1 cranial), in HU.

    Parameters
    ----------
    region:
        One of :data:`REGIONS`.
    size:
        Rows and columns of the image.
    z:
        Level within the region.
    rng:
        Every random choice.
    fov_mm:
        Field of view; random within the region's typical range when ``None``.
    """
    hu = box_blur(region_anatomy(region, size, z, rng, fov_mm), rng)
    hu += rng.normal(0.0, rng.uniform(3, 30), hu.shape).astype(np.float32)
    out: _F = np.clip(hu + rng.uniform(-15, 15), -1024, 3071).astype(np.float32)
    return out


def region_ct(
    region: BodyPart, slices: int, size: int, seed: int, *, fov_mm: float | None = None
) -> npt.NDArray[np.int16]:
    """A series of ``slices`` axial slices through ``region`` (caudal first), int16 HU.

    One field of view for the series; each slice is drawn anew at its own level, so the
    anatomy varies along the series as well as between seeds.
    """
    rng = np.random.default_rng(seed)
    low, high = _FOV[region]
    fov = fov_mm if fov_mm is not None else float(rng.uniform(low, high))
    levels = np.linspace(0.0, 1.0, slices) if slices > 1 else np.array([0.5])
    out = np.empty((slices, size, size), np.int16)
    for k, z in enumerate(levels):
        out[k] = np.rint(region_slice(region, size, float(z), rng, fov))
    return out
