"""Testing: chest radiographs (PA projection) with labelled abnormalities.

The training and test data of the built-in chest radiograph model
(``models/cxr_abnormal``), and the studies of its end-to-end tests. Nothing is
downloaded: every image is drawn from a seed.

The anatomy is a domain-randomised caricature of a PA chest film, in image coordinates
(the patient's right on the image's left, PS3.3 C.7.6.1.1.1): thorax outline, both lung
fields with diaphragm domes and costophrenic angles, mediastinum and heart, spine,
clavicles and ribs. Size, position, rotation, cardiothoracic ratio, densities, contrast
curve, blur, noise, collimation and a lead marker are random. Abnormal images have one
of four findings, each with its mask (where a reader would point):

* ``nodule``: a round opacity of 6 to 16 % of the thorax width, inside a lung;
* ``consolidation``: an irregular patchy opacity inside a lung;
* ``effusion``: the lower part of one hemithorax filled, with a meniscus;
* ``cardiomegaly``: a heart wider than 55 % of the thorax (cardiothoracic ratio).

Values are display densities in 0..1 as on a MONOCHROME2 image (bone and fluid
bright, air dark).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import Grid, blur, smooth_field

__all__ = ["FINDINGS", "ChestRadiograph", "chest_radiograph"]

_F = npt.NDArray[np.float32]
_B = npt.NDArray[np.bool_]

#: The abnormalities an abnormal image may have.
FINDINGS = ("nodule", "consolidation", "effusion", "cardiomegaly")


@dataclass(frozen=True)
class ChestRadiograph:
    """One generated PA chest radiograph and its truth.

    Attributes
    ----------
    image:
        (size, size) float32 display density in 0..1 (MONOCHROME2).
    finding:
        One of :data:`FINDINGS`, or ``""`` for a normal image.
    mask:
        Where the finding is (all False for a normal image).
    cardiothoracic_ratio:
        Heart width over thorax width, as drawn.
    """

    image: _F
    finding: str
    mask: _B
    cardiothoracic_ratio: float

    @property
    def abnormal(self) -> bool:
        """Whether the image has a finding."""
        return bool(self.finding)


def _lung(g: Grid, side: int, dome: float, rng: np.random.Generator) -> _B:
    """A lung field: side -1 is the image's left (the patient's right)."""
    cx = side * float(rng.uniform(0.33, 0.40))
    ax = float(rng.uniform(0.24, 0.29))
    field = g.ellipse(cx, -0.05, ax, float(rng.uniform(0.62, 0.72)))
    # diaphragm dome: highest near the lung's middle, lowest at the costophrenic angle
    below = g.y > dome + 0.22 * ((g.x - cx) / ax) ** 2
    medial = side * g.x < 0.10
    return field & ~below & ~medial


def chest_radiograph(size: int, rng: np.random.Generator, finding: str = "") -> ChestRadiograph:
    """Draw one PA chest radiograph.

    Parameters
    ----------
    size:
        Rows and columns.
    rng:
        The only source of randomness.
    finding:
        ``""`` for a normal image or one of :data:`FINDINGS`.

    Returns
    -------
    ChestRadiograph
        The image, its finding and the finding's mask.
    """
    if finding and finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; known: {FINDINGS}")
    g = Grid(size, rng)
    body = g.ellipse(0.0, 0.12, float(rng.uniform(0.80, 0.92)), 1.05)
    img = np.zeros((size, size), np.float32)
    soft = float(rng.uniform(0.38, 0.52))
    img[body] = soft
    domes = (float(rng.uniform(0.34, 0.44)), float(rng.uniform(0.38, 0.50)))  # right higher
    lungs = [_lung(g, -1, domes[0], rng), _lung(g, 1, domes[1], rng)]
    air = float(rng.uniform(0.08, 0.18))
    texture = 0.04 * smooth_field((size, size), 12, rng)
    for lung in lungs:
        img[lung] = air + texture[lung]
    # thorax width: outer edges of both lungs at their widest
    cols = np.flatnonzero((lungs[0] | lungs[1]).any(axis=0))
    thorax_px = float(cols[-1] - cols[0] + 1) if cols.size else size * 0.6
    # heart: to the image's right of the midline; width set by the cardiothoracic ratio
    ctr = (
        float(rng.uniform(0.58, 0.68))
        if finding == "cardiomegaly"
        else float(rng.uniform(0.38, 0.49))
    )
    half_w = ctr * thorax_px / size / g.scale  # in normalised units (2 per image width)
    heart = g.ellipse(0.10 * half_w / 0.45, 0.28, half_w, float(rng.uniform(0.22, 0.28)))
    mediastinum = (np.abs(g.x) < 0.11) & (g.y > -0.75) & (g.y < 0.5) & body
    dense = float(rng.uniform(0.6, 0.72))
    img[mediastinum | heart] = dense
    img[(np.abs(g.x) < 0.045) & body] += 0.08  # spine through the mediastinum
    for side in (-1, 1):  # clavicles
        img[g.band(side * 0.08, -0.66, side * 0.55, -0.78, 0.025) & body] += 0.18
        for k in range(9):  # posterior ribs: arcs, sloping down laterally
            y0 = -0.72 + k * float(rng.uniform(0.13, 0.15))
            arc = y0 + 0.28 * np.maximum(np.abs(g.x) - 0.08, 0.0) ** 1.5
            rib = (np.abs(g.y - arc) < 0.022) & (side * g.x > 0.05) & (np.abs(g.x) < 0.72)
            img[rib & body] += float(rng.uniform(0.06, 0.11))
    mask = np.zeros((size, size), bool)
    if finding == "nodule":
        lung = lungs[int(rng.integers(2))]
        ys, xs = np.nonzero(lung)
        pick = int(rng.integers(len(ys)))
        radius = float(rng.uniform(0.035, 0.08)) * thorax_px / size * 2 / g.scale * 0.75
        cy, cx = float(g.y[ys[pick], xs[pick]]), float(g.x[ys[pick], xs[pick]])
        mask = g.ellipse(cx, cy, radius, radius * float(rng.uniform(0.85, 1.15)))
        img[mask] += float(rng.uniform(0.22, 0.38))
    elif finding == "consolidation":
        side = int(rng.integers(2))
        lung = lungs[side]
        ys, xs = np.nonzero(lung)
        pick = int(rng.integers(len(ys)))
        cy, cx = float(g.y[ys[pick], xs[pick]]), float(g.x[ys[pick], xs[pick]])
        region = g.ellipse(cx, cy, float(rng.uniform(0.10, 0.18)), float(rng.uniform(0.10, 0.2)))
        patchy = smooth_field((size, size), 16, rng) > -0.3
        mask = region & patchy & lung
        if mask.sum() < 0.002 * size * size:  # clipped at the lung's edge: take the core
            mask = region & lung
        img[mask] += float(rng.uniform(0.20, 0.32))
    elif finding == "effusion":
        side = int(rng.integers(2))
        lung = lungs[side]
        rows = np.flatnonzero(lung.any(axis=1))
        top, bottom = (int(rows[0]), int(rows[-1])) if rows.size else (0, size - 1)
        level_row = bottom - float(rng.uniform(0.3, 0.55)) * (bottom - top)
        level = float(level_row / size * 2 - 1) / g.scale
        cx = (-1 if side == 0 else 1) * 0.36
        meniscus = level - 0.25 * (np.abs(g.x - cx) / 0.3) ** 2 * (
            np.sign(g.x - cx) == (-1 if side == 0 else 1)
        )
        mask = lung & (g.y > meniscus)
        img[mask] = soft + float(rng.uniform(0.0, 0.1))
    elif finding == "cardiomegaly":
        mask = heart
    # the acquisition: blur, contrast curve, noise, collimation, lead marker
    img = blur(img, float(rng.uniform(0.4, 1.6)) * size / 256)
    img = np.clip(img, 0.0, 1.0) ** float(rng.uniform(0.75, 1.35))
    img = img * float(rng.uniform(0.8, 1.0)) + float(rng.uniform(0.0, 0.08))
    img += rng.standard_normal(img.shape).astype(np.float32) * float(rng.uniform(0.005, 0.04))
    if rng.uniform() < 0.5:
        edge = int(size * float(rng.uniform(0.0, 0.06)))
        if edge:
            bright = float(rng.uniform(0.85, 1.0))
            img[:, :edge] = bright
            img[:, size - edge :] = bright
    if rng.uniform() < 0.7:
        m = max(2, size // 24)
        r0, c0 = int(size * 0.06), int(size * float(rng.choice([0.06, 0.85])))
        img[r0 : r0 + m, c0 : c0 + m] = 1.0
    return ChestRadiograph(
        image=np.clip(img, 0.0, 1.0).astype(np.float32),
        finding=finding,
        mask=mask,
        cardiothoracic_ratio=ctr,
    )
