"""Testing: digital mammograms (MLO or CC view) with labelled microcalcifications.

The training and test data of the built-in mammography model (``models/mg_calcification``)
and the images of its tests. Nothing is downloaded: every image is drawn from a seed.

Image coordinates, the chest wall on the image's left (a right breast as displayed):
the breast outline (a half ellipse with a skin line and a darker, thinner periphery),
the pectoral muscle in the upper corner of an MLO view, fibroglandular tissue as a
multi-scale random texture densest behind the nipple, Cooper's ligaments and vessels
as bright curvilinear lines, benign calcifications (large coarse ones and vascular
calcifications along a vessel). Microcalcifications are tiny bright specks of 0.15-0.5
mm; clusters of 3-25 of them lie within 3-12 mm, and a few scattered single specks
elsewhere. Density, contrast, noise, the detector's pixel size and the image size are
random.

Label value 1 marks each microcalcification (benign coarse and vascular calcifications
are not labelled). Display values are 0..1 (MONOCHROME2: dense is bright).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import blur, smooth_field

__all__ = ["CALCIFICATION", "CalcCluster", "Mammogram", "mammogram"]

_F = npt.NDArray[np.float32]

#: Label value of a microcalcification.
CALCIFICATION = 1


@dataclass(frozen=True)
class CalcCluster:
    """One drawn cluster: its centre (row, column in pixels) and its specks' centres."""

    centre: tuple[float, float]
    specks: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Mammogram:
    """One generated mammogram and its truth.

    Attributes
    ----------
    image:
        (rows, columns) float32 display values 0..1.
    labels:
        Same shape, uint8: :data:`CALCIFICATION`.
    pixel_mm:
        The detector's (square) pixel size, Imager Pixel Spacing.
    view:
        ``"MLO"`` or ``"CC"``.
    clusters:
        The clusters drawn (scattered single specks are not listed).
    """

    image: _F
    labels: npt.NDArray[np.uint8]
    pixel_mm: float
    view: str
    clusters: tuple[CalcCluster, ...]


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> _F:
    """Fibroglandular texture: smooth fields at several scales, about 0..1."""
    out = np.zeros(shape, np.float32)
    for cells, weight in ((4, 0.5), (10, 0.3), (28, 0.15), (70, 0.08)):
        out += weight * smooth_field(shape, cells, rng)
    scaled: _F = ((out - out.min()) / max(float(np.ptp(out)), 1e-6)).astype(np.float32)
    return scaled


def _lines(shape: tuple[int, int], count: int, width: float, rng: np.random.Generator) -> _F:
    """Curvilinear bright lines (ligaments, vessels) running from the chest wall."""
    rows, cols = shape
    out = np.zeros(shape, np.float32)
    for _ in range(count):
        r, c = float(rng.uniform(0.05, 0.95) * rows), 0.0
        angle = float(rng.uniform(-0.6, 0.6))
        for _ in range(int(cols * 1.2)):
            rr, cc = int(r), int(c)
            if not (0 <= rr < rows and 0 <= cc < cols):
                break
            out[max(0, rr - 1) : rr + 2, cc] += 0.5
            angle += float(rng.normal(0, 0.03))
            r += np.sin(angle)
            c += np.cos(angle)
    return blur(out.clip(0, 1), width)


def _speck(
    labels: npt.NDArray[np.uint8], image: _F, row: float, col: float, radius_px: float, value: float
) -> None:
    """A microcalcification: a bright disc, labelled."""
    r0, c0 = int(row), int(col)
    reach = int(np.ceil(radius_px)) + 1
    rs = np.arange(max(0, r0 - reach), min(image.shape[0], r0 + reach + 1))
    cs = np.arange(max(0, c0 - reach), min(image.shape[1], c0 + reach + 1))
    if not len(rs) or not len(cs):
        return
    d = np.hypot(rs[:, None] + 0.5 - row, cs[None, :] + 0.5 - col)
    inside = d <= max(radius_px, 0.5)
    block = (slice(rs[0], rs[-1] + 1), slice(cs[0], cs[-1] + 1))
    image[block] = np.where(inside, np.maximum(image[block], value), image[block])
    labels[block][inside] = CALCIFICATION


def mammogram(
    rng: np.random.Generator,
    clusters: int | None = None,
    view: str | None = None,
    height_mm: float | None = None,
) -> Mammogram:
    """Draw one mammogram.

    Parameters
    ----------
    rng:
        The random source: the same state gives the same image.
    clusters:
        Microcalcification clusters to draw; ``None``: 0, 1 or 2.
    view:
        ``"MLO"``, ``"CC"`` or ``None`` (either).
    height_mm:
        The image's height; ``None``: 60-90 mm (a small breast, or a detail: what the
        model trains on). A whole mammogram is about 300 mm.
    """
    view = view or ("MLO" if rng.random() < 0.5 else "CC")
    pixel = float(rng.uniform(0.07, 0.1))
    height = float(rng.uniform(60, 90))  # drawn either way: the same seed, the same image
    rows = int((height_mm or height) / pixel)
    cols = int(rows * rng.uniform(0.7, 0.9))
    shape = (rows, cols)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy = rows * float(rng.uniform(0.45, 0.55))
    ay, ax = rows * float(rng.uniform(0.42, 0.5)), cols * float(rng.uniform(0.8, 0.98))
    level = ((yy - cy) / ay) ** 2 + (xx / ax) ** 2
    breast = level <= 1.0
    thickness = np.sqrt(np.clip(1.0 - level, 0.0, 1.0))  # thinner towards the skin
    density = float(rng.uniform(0.2, 0.8))
    glands = _texture(shape, rng) * np.exp(-level * float(rng.uniform(0.5, 2.0)))
    tissue = 0.25 + 0.35 * thickness + density * 0.45 * glands
    tissue += 0.12 * _lines(shape, int(rng.integers(8, 20)), 1.2 / pixel * 0.1, rng)
    image = np.where(breast, tissue, 0.02).astype(np.float32)
    skin = breast & (level > (1 - 0.02 * 60 / max(ay * pixel, 1)) ** 2)
    image[skin] += 0.1
    if view == "MLO":
        muscle = (xx / (cols * rng.uniform(0.25, 0.4)) + yy / (rows * rng.uniform(0.3, 0.5))) < 1
        image[muscle & breast] = 0.75 + 0.05 * smooth_field(shape, 6, rng)[muscle & breast]
    labels = np.zeros(shape, np.uint8)
    # benign: coarse calcifications (large, not labelled) and a vascular one (a dotted line)
    for _ in range(int(rng.integers(0, 4))):
        r, c = rng.uniform(0.1, 0.9) * rows, rng.uniform(0.1, 0.8) * cols
        rad = float(rng.uniform(0.8, 2.0)) / pixel
        disc = np.hypot(yy - r, xx - c) <= rad
        image[disc & breast] = np.maximum(image[disc & breast], 0.95)
    if rng.random() < 0.4:
        r, c, angle = (
            rng.uniform(0.2, 0.8) * rows,
            rng.uniform(0.1, 0.3) * cols,
            rng.uniform(-0.5, 0.5),
        )
        for k in range(int(rng.integers(20, 60))):
            rr, cc = r + np.sin(angle) * k * 0.6 / pixel, c + np.cos(angle) * k * 0.6 / pixel
            band = np.hypot(yy - rr, xx - cc) <= 0.35 / pixel
            image[band & breast] = np.maximum(image[band & breast], 0.9)
    image = blur(image, 0.6)
    # microcalcifications: clusters and a few scattered specks
    drawn: list[CalcCluster] = []
    count = clusters if clusters is not None else int(rng.choice(3, p=[0.3, 0.5, 0.2]))
    inside = np.argwhere(breast & (level < 0.8))
    for _ in range(count):
        r, c = inside[int(rng.integers(len(inside)))]
        spread = float(rng.uniform(1.5, 6.0)) / pixel
        specks = []
        for _ in range(int(rng.integers(3, 26))):
            sr, sc = r + rng.normal(0, spread / 2), c + rng.normal(0, spread / 2)
            if 0 <= sr < rows and 0 <= sc < cols and breast[int(sr), int(sc)]:
                radius = float(rng.uniform(0.075, 0.25)) / pixel
                value = float(image[int(sr), int(sc)] + rng.uniform(0.15, 0.4))
                _speck(labels, image, sr, sc, radius, min(value, 1.0))
                specks.append((float(sr), float(sc)))
        drawn.append(CalcCluster((float(r), float(c)), tuple(specks)))
    for _ in range(int(rng.integers(0, 4))):
        r, c = inside[int(rng.integers(len(inside)))]
        radius = float(rng.uniform(0.075, 0.2)) / pixel
        _speck(labels, image, float(r), float(c), radius, min(float(image[r, c]) + 0.25, 1.0))
    # detector: quantum noise that grows with signal, a display curve
    noise = float(rng.uniform(0.01, 0.03))
    grain = rng.standard_normal(shape).astype(np.float32)
    image = (image + noise * np.sqrt(np.clip(image, 0.01, 1)) * grain).astype(np.float32)
    shown: _F = (np.clip(image, 0, 1) ** float(rng.uniform(0.8, 1.3))).astype(np.float32)
    return Mammogram(shown, labels, pixel, view, tuple(drawn))
