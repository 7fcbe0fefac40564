"""Testing: B-mode ultrasound images of the thyroid and the breast with labelled nodules.

The training and test data of the built-in ultrasound nodule model (``models/us_nodule``)
and the images of its tests. Nothing is downloaded: every image is drawn from a seed.

Each image is a linear-probe B-mode frame in image coordinates (rows: depth from the skin,
columns: across the probe), simulated in three steps:

1. a map of tissue reflectivity: skin line and layers, and

   * **thyroid** (transverse view): strap muscles, one lobe with the isthmus, the trachea
     with its shadow, the carotid artery, the prevertebral muscle;
   * **breast**: subcutaneous fat with Cooper's ligaments, fibroglandular tissue,
     retromammary fat, pectoralis muscle and a rib with its shadow;

   plus zero to three nodules of kinds seen in practice: solid hypo-, iso- (with a
   halo) or hyperechoic, cystic (anechoic, posterior enhancement), mixed, and irregular
   hypoechoic ones, often taller than wide, with posterior shadowing; some with
   microcalcifications;
2. speckle: a correlated complex Gaussian field (axial resolution finer than lateral),
   so that the envelope is Rayleigh distributed as in real B-mode;
3. depth attenuation, an imperfect time-gain compensation, a focal zone, log
   compression and a random display curve, then a black frame with burned-in marks
   (the scanner's user interface) around the field of view.

Label values: 1 thyroid gland (lobe and isthmus, thyroid images only), 2 nodule (the
halo included, as the nodule is measured). Display values are 0..1 (MONOCHROME2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import blur_axes, smooth_field

__all__ = ["GLAND", "NODULE", "ORGANS", "UltrasoundImage", "UsNodule", "ultrasound_image"]

_F = npt.NDArray[np.float32]
_B = npt.NDArray[np.bool_]

#: Label values.
GLAND = 1
NODULE = 2
#: The organs an image may show.
ORGANS = ("thyroid", "breast")
#: The nodule kinds drawn.
KINDS = ("hypoechoic", "isoechoic-halo", "hyperechoic", "cyst", "mixed", "irregular")


@dataclass(frozen=True)
class UsNodule:
    """One drawn nodule (sizes as drawn, before speckle; the label is the truth)."""

    kind: str
    width_mm: float  # across the probe (transverse)
    depth_mm: float  # along the beam (anteroposterior)
    calcified: bool

    @property
    def taller_than_wide(self) -> bool:
        """Deeper than wide (TI-RADS / BI-RADS "not parallel")."""
        return self.depth_mm > self.width_mm


@dataclass(frozen=True)
class UltrasoundImage:
    """One generated B-mode image and its truth.

    Attributes
    ----------
    image:
        (rows, columns) float32 display values 0..1, the frame around the field of
        view included.
    labels:
        Same shape, uint8: :data:`GLAND`, :data:`NODULE`.
    pixel_mm:
        The (square) pixel size, as the scanner's region calibration gives it.
    organ:
        ``"thyroid"`` or ``"breast"``.
    nodules:
        The nodules drawn, in label order of their centres.
    field:
        (top, bottom, left, right) of the field of view in pixels.
    """

    image: _F
    labels: npt.NDArray[np.uint8]
    pixel_mm: float
    organ: str
    nodules: tuple[UsNodule, ...]
    field: tuple[int, int, int, int]


class _Field:
    """Millimetre coordinates of the field of view: x across the probe, y depth."""

    def __init__(self, rows: int, cols: int, pixel_mm: float) -> None:
        self.y, self.x = np.meshgrid(
            (np.arange(rows, dtype=np.float32) + 0.5) * pixel_mm,
            (np.arange(cols, dtype=np.float32) + 0.5) * pixel_mm,
            indexing="ij",
        )
        self.width = cols * pixel_mm
        self.depth = rows * pixel_mm
        self.pixel_mm = pixel_mm

    def blob(
        self,
        cx: float,
        cy: float,
        ax: float,
        ay: float,
        rng: np.random.Generator,
        rough: float = 0.0,
        angle: float = 0.0,
    ) -> _F:
        """The level of a rotated ellipse with a wavy border (< 1 inside)."""
        dx, dy = self.x - cx, self.y - cy
        c, s = math.cos(angle), math.sin(angle)
        u, v = (c * dx + s * dy) / ax, (-s * dx + c * dy) / ay
        radius = np.sqrt(u * u + v * v)
        if rough > 0:
            theta = np.arctan2(v, u)
            wave = np.zeros_like(theta)
            for k in range(2, 9):
                wave += rng.normal(0, rough / k**0.7) * np.cos(k * theta + rng.uniform(0, 6.3))
            radius = radius / (1 + np.clip(wave, -0.45, 0.6))
        out: _F = radius.astype(np.float32)
        return out

    def rows_below(self, mask: _B) -> _F:
        """Depth (mm) below the lowest point of ``mask`` in each column; -1 above it."""
        any_col: _B = np.asarray(mask.any(axis=0))
        bottom = np.where(any_col, mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0), -1)
        below = self.y - (bottom.astype(np.float32) + 1) * self.pixel_mm
        out: _F = np.where(any_col[None, :] & (below > 0), below, -1.0).astype(np.float32)
        return out


def _streaks(f: _Field, rng: np.random.Generator, scale_mm: float) -> _F:
    """Horizontal fibrillar texture (muscle), about -1..1."""
    rows, cols = f.x.shape
    noise = rng.standard_normal((rows, cols)).astype(np.float32)
    smooth = blur_axes(noise, 0.4 / f.pixel_mm, scale_mm / f.pixel_mm)
    out: _F = smooth / max(float(smooth.std()), 1e-6)
    return out


def _interior(kind: str, background: float, rng: np.random.Generator) -> float:
    """The reflectivity inside a nodule of ``kind`` (relative to the tissue around it)."""
    if kind == "cyst":
        return 0.03
    low, high = {
        "hypoechoic": (0.25, 0.55),
        "isoechoic-halo": (0.85, 1.1),
        "hyperechoic": (1.25, 1.6),
        "irregular": (0.15, 0.4),
        "mixed": (0.55, 0.85),  # solid with cystic spaces, inside a thin capsule
    }[kind]
    return background * float(rng.uniform(low, high))


def _nodule(
    f: _Field,
    echo: _F,
    effects: _F,
    labels: npt.NDArray[np.uint8],
    inside: _F,
    background: float,
    rng: np.random.Generator,
    kind: str,
    centre: tuple[float, float],
    size: tuple[float, float],
) -> UsNodule:
    """Draw one nodule into ``echo`` and ``labels``; posterior effects into ``effects``."""
    width, depth = size
    rough = {"irregular": 0.35}.get(kind, float(rng.uniform(0.0, 0.12)))
    level = f.blob(*centre, width / 2, depth / 2, rng, rough, float(rng.uniform(-0.25, 0.25)))
    mask = level < 1.0
    texture = 1 + 0.15 * smooth_field(echo.shape, 24, rng)
    echo[mask] = (_interior(kind, background, rng) * texture)[mask]
    if kind == "mixed":
        echo[mask & (level > 0.93)] = background * 1.4
    if kind == "isoechoic-halo":
        halo = mask & (level > 1.0 - float(rng.uniform(0.8, 1.4)) / (min(width, depth) / 2))
        echo[halo] = background * 0.15
    if kind == "mixed":
        for _ in range(int(rng.integers(1, 4))):
            r = min(width, depth) * float(rng.uniform(0.1, 0.25))
            cx = centre[0] + rng.uniform(-0.25, 0.25) * width
            cy = centre[1] + rng.uniform(-0.25, 0.25) * depth
            echo[mask & (f.blob(cx, cy, r, r * rng.uniform(0.7, 1.3), rng) < 1.0)] = 0.03
    calcified = kind in ("irregular", "hypoechoic", "mixed") and rng.random() < 0.3
    if calcified:
        ys, xs = np.nonzero(mask)
        pick = rng.choice(len(ys), size=min(len(ys), int(rng.integers(3, 12))), replace=False)
        for k in pick:
            r0, c0 = int(ys[k]), int(xs[k])
            echo[max(0, r0 - 1) : r0 + 2, max(0, c0 - 1) : c0 + 2] = 2.5
    below = f.rows_below(mask)
    reach = float(rng.uniform(5.0, 15.0))
    if kind in ("cyst", "mixed"):
        gain = float(rng.uniform(0.3, 0.7))  # posterior enhancement
    elif kind == "irregular" or calcified:
        gain = -float(rng.uniform(0.3, 0.7))  # posterior shadowing
    else:
        gain = 0.0
    effects *= np.where(below > 0, 1 + gain * np.exp(-below / reach), 1.0).astype(np.float32)
    labels[mask] = NODULE
    inside[level < 1.5] = 0.0  # the next nodule goes elsewhere, not touching this one
    return UsNodule(kind, float(width), float(depth), calcified)


def _nodule_kind(organ: str, rng: np.random.Generator) -> str:
    weights = (
        (0.28, 0.18, 0.1, 0.14, 0.14, 0.16)  # thyroid
        if organ == "thyroid"
        else (0.35, 0.0, 0.05, 0.3, 0.05, 0.25)  # breast: oval masses, cysts, carcinoma
    )
    return str(rng.choice(KINDS, p=np.asarray(weights) / sum(weights)))


def _nodule_size(kind: str, rng: np.random.Generator, room: float) -> tuple[float, float]:
    """(width, depth) in mm; irregular nodules are often taller than wide."""
    long = float(min(rng.uniform(4.0, 22.0), room))
    if kind == "irregular" and rng.random() < 0.6:
        ratio = float(rng.uniform(1.05, 1.5))
        return long / ratio, long
    ratio = float(rng.uniform(0.55, 1.0))
    return long, long * ratio


def _place(
    f: _Field,
    region: _F,
    size: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[float, float] | None:
    """A centre whose nodule footprint lies mostly in ``region`` (1 inside); None if none."""
    half = (size[0] / 2, size[1] / 2)
    ys, xs = np.nonzero(region > 0.5)
    if not len(ys):
        return None
    for _ in range(30):
        k = int(rng.integers(len(ys)))
        cx, cy = float(f.x[ys[k], xs[k]]), float(f.y[ys[k], xs[k]])
        if not (half[0] < cx < f.width - half[0] and half[1] + 2 < cy < f.depth - half[1]):
            continue
        foot = f.blob(cx, cy, *half, rng) < 1.0
        if region[foot].mean() > 0.85:
            return cx, cy
    return None


#: What an organ's drawing gives: reflectivity, the labelled gland (or None), where
#: nodules go, posterior effects, and the reflectivity nodules are drawn relative to.
_Organ = tuple[_F, _B | None, _F, _F, float]


def _thyroid(f: _Field, rng: np.random.Generator) -> _Organ:
    """A transverse view of one thyroid lobe with the isthmus; nodules go in the lobe."""
    echo = np.full(f.x.shape, 0.55, np.float32) * (1 + 0.15 * smooth_field(f.x.shape, 6, rng))
    effects = np.ones(f.x.shape, np.float32)
    skin = float(rng.uniform(1.0, 2.0))
    strap = (f.y > skin + rng.uniform(0.5, 1.5)) & (f.y < skin + rng.uniform(4.0, 6.5))
    echo[strap] = (0.3 * (1 + 0.35 * _streaks(f, rng, 4.0)))[strap]
    side = 1 if rng.random() < 0.5 else -1  # where the trachea is: image left or right
    centre_x = f.width * (0.5 + side * rng.uniform(-0.05, 0.08))
    gland_w, gland_d = rng.uniform(8.0, 14.0), rng.uniform(5.5, 9.5)
    centre_y = skin + 6.0 + gland_d + rng.uniform(-1.0, 2.0)
    lobe = f.blob(centre_x, centre_y, gland_w, gland_d, rng, 0.05, rng.uniform(-0.2, 0.2)) < 1.0
    trachea_x = centre_x - side * (gland_w + rng.uniform(1.0, 4.0))
    isthmus_y = skin + float(rng.uniform(6.0, 8.0))
    isthmus = (
        f.blob(
            (centre_x + trachea_x) / 2,
            isthmus_y,
            abs(trachea_x - centre_x) / 2 + 2.0,
            float(rng.uniform(1.5, 2.5)),
            rng,
            0.05,
        )
        < 1.0
    )
    gland = lobe | isthmus
    gland_echo = float(rng.uniform(0.8, 1.05))
    echo[gland] = (gland_echo * (1 + 0.08 * smooth_field(f.x.shape, 30, rng)))[gland]
    trachea_r = float(rng.uniform(7.0, 10.0))
    top = isthmus_y + float(rng.uniform(2.0, 3.5))
    tr = np.hypot(f.x - trachea_x, f.y - (top + trachea_r))
    wall = (np.abs(tr - trachea_r) < 0.8) & (f.y < top + trachea_r)
    echo[wall] = 1.6
    shadow = f.rows_below(wall) > 0  # air: a shadow with reverberation lines
    reverb = shadow & (np.mod(f.y - top, rng.uniform(2.0, 3.0)) < 0.4)
    effects[shadow] = 0.1
    effects[reverb] = 0.5
    carotid_x = centre_x + side * (gland_w + rng.uniform(2.0, 5.0))
    carotid_r = float(rng.uniform(2.8, 4.2))
    carotid = np.hypot(f.x - carotid_x, f.y - (centre_y + rng.uniform(-1, 3))) < carotid_r
    echo[carotid] = 0.02
    effects *= np.where(f.rows_below(carotid) > 0, 1.3, 1.0).astype(np.float32)
    deep = f.y > centre_y + gland_d + rng.uniform(1.0, 3.0)
    echo[deep & ~carotid] = (0.35 * (1 + 0.3 * _streaks(f, rng, 3.0)))[deep & ~carotid]
    echo[f.y < skin] = 1.3
    return echo, gland & ~carotid, lobe.astype(np.float32), effects, gland_echo


def _breast(f: _Field, rng: np.random.Generator) -> _Organ:
    """A breast view; nodules go in the fibroglandular tissue (not labelled)."""
    skin = float(rng.uniform(1.5, 2.5))
    fat_to = skin + float(rng.uniform(3.0, 9.0)) + 2.0 * smooth_field(f.x.shape, 4, rng)
    glandular_to = fat_to + float(rng.uniform(9.0, 18.0)) + 3.0 * smooth_field(f.x.shape, 4, rng)
    muscle_from = glandular_to + float(rng.uniform(2.0, 5.0))
    echo = np.full(f.x.shape, 0.3, np.float32) * (1 + 0.25 * smooth_field(f.x.shape, 14, rng))
    ligaments = np.abs(np.sin(f.x / rng.uniform(3.0, 6.0) + 2.0 * smooth_field(f.x.shape, 5, rng)))
    echo[(f.y < fat_to) & (ligaments < 0.08)] = 0.9
    glandular = (f.y >= fat_to) & (f.y < glandular_to)
    gland_echo = float(rng.uniform(0.75, 1.05))
    echo[glandular] = (gland_echo * (1 + 0.25 * smooth_field(f.x.shape, 20, rng)))[glandular]
    muscle = f.y >= muscle_from
    echo[muscle] = (0.35 * (1 + 0.35 * _streaks(f, rng, 5.0)))[muscle]
    effects = np.ones(f.x.shape, np.float32)
    if rng.random() < 0.6:
        rib_x, rib_y = rng.uniform(0.2, 0.8) * f.width, float(muscle_from.mean()) + 8.0
        arc = np.hypot((f.x - rib_x) / 2.2, f.y - rib_y - 6.0)
        rib = (np.abs(arc - 6.0) < 0.7) & (f.y < rib_y)
        echo[rib] = 1.6
        effects *= np.where(f.rows_below(rib) > 0, 0.15, 1.0).astype(np.float32)
    echo[f.y < skin] = 1.3
    return echo, None, glandular.astype(np.float32), effects, gland_echo


def _image(f: _Field, echo: _F, effects: _F, rng: np.random.Generator) -> _F:
    """B-mode display values 0..1 of a reflectivity map (speckle, gain, compression)."""
    sigma_axial = float(rng.uniform(0.12, 0.25)) / f.pixel_mm
    sigma_lateral = float(rng.uniform(0.25, 0.55)) / f.pixel_mm
    re = blur_axes(rng.standard_normal(echo.shape).astype(np.float32), sigma_axial, sigma_lateral)
    im = blur_axes(rng.standard_normal(echo.shape).astype(np.float32), sigma_axial, sigma_lateral)
    speckle = np.hypot(re, im)
    speckle /= max(float(speckle.mean()), 1e-6)
    tissue = blur_axes(np.maximum(echo * effects, 0.005), 0.5 * sigma_axial, 0.5 * sigma_lateral)
    attenuation = np.exp(-float(rng.uniform(0.01, 0.04)) * f.y)
    tgc = np.exp(float(rng.uniform(0.005, 0.04)) * f.y) * (
        1 + 0.1 * smooth_field(f.x.shape, 3, rng)
    )
    focus = 1 + float(rng.uniform(0.0, 0.3)) * np.exp(
        -(((f.y - rng.uniform(0.3, 0.7) * f.depth) / (0.15 * f.depth)) ** 2)
    )
    envelope = tissue * speckle * attenuation * tgc * focus
    envelope += 0.01 * np.abs(rng.standard_normal(echo.shape)).astype(np.float32)
    knee = float(rng.uniform(4.0, 16.0))
    shown = np.log1p(knee * envelope) / math.log1p(knee * float(rng.uniform(2.0, 4.0)))
    shown = np.clip(shown, 0.0, 1.0) ** float(rng.uniform(0.8, 1.3))
    out: _F = (shown * float(rng.uniform(0.8, 1.0))).astype(np.float32)
    return out


def _frame(
    field: _F, labels: npt.NDArray[np.uint8], pixel_mm: float, rng: np.random.Generator
) -> tuple[_F, npt.NDArray[np.uint8], tuple[int, int, int, int]]:
    """Put the field of view into a black frame with burned-in marks, as scanners do."""
    rows, cols = field.shape
    top, bottom = int(rng.integers(0, 50)), int(rng.integers(0, 30))
    left, right = int(rng.integers(0, 70)), int(rng.integers(0, 70))
    image = np.zeros((rows + top + bottom, cols + left + right), np.float32)
    truth = np.zeros(image.shape, np.uint8)
    image[top : top + rows, left : left + cols] = field
    truth[top : top + rows, left : left + cols] = labels
    for _ in range(int(rng.integers(0, 8))):  # text and logos in the frame
        r = int(rng.integers(0, image.shape[0] - 8))
        c = int(rng.integers(0, image.shape[1] - 30))
        if truth[r : r + 8, c : c + 30].any() or image[r : r + 8, c : c + 30].any():
            continue
        image[r : r + int(rng.integers(3, 8)), c : c + int(rng.integers(5, 30))] = rng.uniform(
            0.5, 1.0
        )
    ticks = left + cols + 3 if right > 6 else None
    if ticks is not None:  # depth scale: a dot every 5 mm
        for r in range(top, top + rows, max(1, round(5.0 / pixel_mm))):
            image[r : r + 2, ticks : ticks + 2] = 0.9
    return image, truth, (top, top + rows, left, left + cols)


def _fit(
    image: _F,
    labels: npt.NDArray[np.uint8],
    field: tuple[int, int, int, int],
    shape: tuple[int, int],
) -> tuple[_F, npt.NDArray[np.uint8], tuple[int, int, int, int]]:
    """Crop or pad (black) at the bottom and right to ``shape``."""
    out = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.uint8)
    rows, cols = min(shape[0], image.shape[0]), min(shape[1], image.shape[1])
    out[:rows, :cols] = image[:rows, :cols]
    truth[:rows, :cols] = labels[:rows, :cols]
    top, bottom, left, right = field
    return out, truth, (top, min(bottom, rows), left, min(right, cols))


def ultrasound_image(
    rng: np.random.Generator,
    organ: str | None = None,
    nodules: int | None = None,
    shape: tuple[int, int] | None = None,
) -> UltrasoundImage:
    """Draw one B-mode image.

    Parameters
    ----------
    rng:
        The random source: the same state gives the same image.
    organ:
        ``"thyroid"``, ``"breast"`` or ``None`` (either, 60/40).
    nodules:
        How many nodules to try to place (each only where it fits); ``None``: 0 to 3,
        one most often.
    shape:
        Crop or pad the image to (rows, columns), as the images of one series share a
        size; ``None``: the size drawn.

    Returns
    -------
    UltrasoundImage
        The image with its labels and the nodules drawn.
    """
    organ = organ or ("thyroid" if rng.random() < 0.6 else "breast")
    if organ not in ORGANS:
        raise ValueError(f"organ is one of {ORGANS}, got {organ!r}")
    pixel_mm = float(rng.uniform(0.06, 0.14))
    width_mm, depth_mm = float(rng.uniform(36.0, 50.0)), float(rng.uniform(28.0, 45.0))
    rows, cols = min(560, int(depth_mm / pixel_mm)), min(640, int(width_mm / pixel_mm))
    f = _Field(rows, cols, pixel_mm)
    make = _thyroid if organ == "thyroid" else _breast
    echo, gland, region, effects, background = make(f, rng)
    labels = np.zeros((rows, cols), np.uint8)
    if gland is not None:
        labels[gland] = GLAND
    count = nodules if nodules is not None else int(rng.choice(4, p=[0.2, 0.45, 0.25, 0.1]))
    drawn: list[UsNodule] = []
    inside = region.copy()
    room = float(min(f.depth, f.width) * 0.45)
    for _ in range(count):
        kind = _nodule_kind(organ, rng)
        size = _nodule_size(kind, rng, room)
        centre = _place(f, inside, size, rng)
        if centre is None:
            continue
        drawn.append(_nodule(f, echo, effects, labels, inside, background, rng, kind, centre, size))
    image, truth, field = _frame(_image(f, echo, effects, rng), labels, pixel_mm, rng)
    if shape is not None:
        image, truth, field = _fit(image, truth, field, shape)
    return UltrasoundImage(image, truth, pixel_mm, organ, tuple(drawn), field)
