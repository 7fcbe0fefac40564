"""Generated chest radiographs (PA projection) with labelled abnormalities.

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

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "FINDINGS",
    "ChestRadiograph",
    "ExtremityRadiograph",
    "chest_radiograph",
    "extremity_radiograph",
]

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


def _smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> _F:
    """A smooth random field in about -1..1: a coarse grid, bilinearly upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    ys = np.linspace(0, cells - 1, shape[0], dtype=np.float32)
    xs = np.linspace(0, cells - 1, shape[1], dtype=np.float32)
    y0 = np.minimum(ys.astype(int), cells - 2)
    x0 = np.minimum(xs.astype(int), cells - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    out: _F = ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy).astype(np.float32)
    return out


def _blur(img: _F, sigma: float) -> _F:
    """Separable Gaussian blur (sigma in pixels), edges replicated."""
    if sigma < 0.3:
        return img
    radius = max(1, int(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    out = img
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], "edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for k, w in enumerate(kernel):
            acc += w * (padded[k : k + n] if axis == 0 else padded[:, k : k + n])
        out = acc
    return out.astype(np.float32)


class _Grid:
    """Normalised coordinates of the thorax frame: x, y in about -1..1, y down."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        scale = float(rng.uniform(0.78, 1.02))
        angle = math.radians(float(rng.uniform(-6, 6)))
        dx, dy = rng.uniform(-0.07, 0.07, 2)
        v = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        yy, xx = np.meshgrid(v, v, indexing="ij")
        xr = (math.cos(angle) * (xx - dx) + math.sin(angle) * (yy - dy)) / scale
        yr = (-math.sin(angle) * (xx - dx) + math.cos(angle) * (yy - dy)) / scale
        self.x: _F = xr.astype(np.float32)
        self.y: _F = yr.astype(np.float32)
        self.size = size
        self.scale = scale

    def ellipse(self, cx: float, cy: float, ax: float, ay: float) -> _B:
        return ((self.x - cx) / ax) ** 2 + ((self.y - cy) / ay) ** 2 <= 1.0

    def band(self, x0: float, y0: float, x1: float, y1: float, half_width: float) -> _B:
        """Points within ``half_width`` of the segment (x0, y0)-(x1, y1)."""
        px, py = self.x - x0, self.y - y0
        vx, vy = x1 - x0, y1 - y0
        t = np.clip((px * vx + py * vy) / (vx * vx + vy * vy), 0.0, 1.0)
        return (px - t * vx) ** 2 + (py - t * vy) ** 2 <= half_width**2


def _lung(g: _Grid, side: int, dome: float, rng: np.random.Generator) -> _B:
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
    g = _Grid(size, rng)
    body = g.ellipse(0.0, 0.12, float(rng.uniform(0.80, 0.92)), 1.05)
    img = np.zeros((size, size), np.float32)
    soft = float(rng.uniform(0.38, 0.52))
    img[body] = soft
    domes = (float(rng.uniform(0.34, 0.44)), float(rng.uniform(0.38, 0.50)))  # right higher
    lungs = [_lung(g, -1, domes[0], rng), _lung(g, 1, domes[1], rng)]
    air = float(rng.uniform(0.08, 0.18))
    texture = 0.04 * _smooth_field((size, size), 12, rng)
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
        patchy = _smooth_field((size, size), 16, rng) > -0.3
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
    img = _blur(img, float(rng.uniform(0.4, 1.6)) * size / 256)
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


@dataclass(frozen=True)
class ExtremityRadiograph:
    """One generated radiograph of a limb segment (forearm or leg) and its truth.

    Attributes
    ----------
    image:
        (size, size) float32 display density in 0..1 (MONOCHROME2).
    fracture:
        Whether a bone is broken.
    mask:
        The fracture line and its immediate surroundings (all False without a fracture).
    """

    image: _F
    fracture: bool
    mask: _B


def _rotated(g: _Grid, angle: float) -> tuple[_F, _F]:
    """Coordinates along (u) and across (v) a limb running at ``angle`` from vertical."""
    c, s = math.cos(angle), math.sin(angle)
    u = (c * g.y + s * g.x).astype(np.float32)
    v = (-s * g.y + c * g.x).astype(np.float32)
    return u, v


def extremity_radiograph(
    size: int, rng: np.random.Generator, fracture: bool = False
) -> ExtremityRadiograph:
    """Draw one AP radiograph of a forearm or lower leg: two long bones in soft tissue.

    Each bone is a tube (bright cortex, darker medulla with trabecular texture) with a
    wider end at a joint. A fracture is a dark line across one bone, transverse or
    oblique, where the far fragment steps aside by 15 to 60 % of the bone's width or (one
    in five) not at all, the subtle case; sometimes angulated. The step fades within
    about a bone's width of the line, so the fracture shows at its line only.

    Parameters
    ----------
    size:
        Rows and columns.
    rng:
        The only source of randomness.
    fracture:
        Whether to break a bone.
    """
    g = _Grid(size, rng)
    angle = math.radians(float(rng.uniform(-25, 25)))
    u, v = _rotated(g, angle)
    img = np.zeros((size, size), np.float32)
    limb_half = float(rng.uniform(0.42, 0.6))
    taper = float(rng.uniform(0.0, 0.12))
    limb = np.abs(v) < limb_half - taper * u
    soft = float(rng.uniform(0.25, 0.4))
    img[limb] = soft + 0.05 * _smooth_field((size, size), 6, rng)[limb]
    texture = _smooth_field((size, size), 40, rng)
    bones = []
    gap = float(rng.uniform(0.12, 0.22))
    for k, side in enumerate((-1, 1)):
        width = float(rng.uniform(0.09, 0.15)) * (1.25 if k == 0 else 0.85)
        centre = side * (gap / 2 + width) + float(rng.uniform(-0.03, 0.03))
        bones.append((centre, width))
    joint = float(rng.uniform(0.45, 0.75))  # the joint end near the bottom of the image
    broken = int(rng.integers(2)) if fracture else -1
    line_u = float(rng.uniform(-0.55, joint - 0.25))
    tilt = math.tan(math.radians(float(rng.uniform(-55, 55))))
    shift = float(rng.uniform(0.15, 0.6)) * bones[max(broken, 0)][1] * float(rng.choice([-1, 1]))
    if rng.uniform() < 0.2:
        shift = 0.0  # undisplaced: only the line shows
    bend = math.radians(float(rng.uniform(-10, 10))) if rng.uniform() < 0.4 else 0.0
    mask = np.zeros((size, size), bool)
    cortex_density = float(rng.uniform(0.78, 0.95))
    medulla_density = float(rng.uniform(0.5, 0.65))
    for k, (centre, width) in enumerate(bones):
        uu, vv = u, v - centre
        if k == broken:
            # the distal fragment steps aside at the line, the step fading within about a
            # bone's width (so the bone's far end stays in its joint: the fracture, not
            # the bone's alignment as a whole, is what shows)
            past = uu - line_u - tilt * vv
            fade = np.exp(-np.maximum(past, 0.0) / 0.12)
            step = np.where(past > 0, (shift + bend * past) * fade, 0.0)
            vv = (vv - step).astype(np.float32)
        flare = width * (1 + 0.6 * np.clip((uu - joint + 0.25) / 0.25, 0, 1) ** 2)
        outer = (np.abs(vv) < flare) & (uu < joint)
        inner = (np.abs(vv) < flare * float(rng.uniform(0.5, 0.7))) & (uu < joint - 0.04)
        img[outer] = cortex_density
        img[inner] = medulla_density + 0.06 * texture[inner]
        if k == broken:
            across = np.abs(uu - line_u - tilt * vv) / math.sqrt(1 + tilt * tilt)
            line = outer & (across < float(rng.uniform(0.012, 0.028)))
            img[line] = soft + 0.05
            near = np.abs(u - line_u - tilt * (v - centre)) / math.sqrt(1 + tilt * tilt) < 0.05
            mask = (np.abs(v - centre) < 2.2 * width) & near & limb
    # the other side of the joint: a carpal/tarsal block
    block = (u > joint + 0.03) & (u < joint + 0.3) & (np.abs(v) < limb_half * 0.8)
    img[block] = np.maximum(img[block], float(rng.uniform(0.55, 0.7)) + 0.05 * texture[block])
    img = _blur(img, float(rng.uniform(0.3, 1.2)) * size / 256)
    img = np.clip(img, 0.0, 1.0) ** float(rng.uniform(0.75, 1.35))
    img = img * float(rng.uniform(0.8, 1.0)) + float(rng.uniform(0.0, 0.08))
    img += rng.standard_normal(img.shape).astype(np.float32) * float(rng.uniform(0.005, 0.03))
    if rng.uniform() < 0.5:
        edge = int(size * float(rng.uniform(0.0, 0.08)))
        if edge:
            img[:edge] = float(rng.uniform(0.85, 1.0))
    if rng.uniform() < 0.7:
        m = max(2, size // 24)
        r0, c0 = int(size * 0.85), int(size * float(rng.choice([0.06, 0.88])))
        img[r0 : r0 + m, c0 : c0 + m] = 1.0
    return ExtremityRadiograph(
        image=np.clip(img, 0.0, 1.0).astype(np.float32), fracture=fracture, mask=mask
    )
