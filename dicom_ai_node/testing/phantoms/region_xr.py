"""Testing: radiographs of the head, chest, abdomen, pelvis and the limbs.

The training and test data of the built-in radiograph body-region model
(``models/xr_body_region``). Each film is a projection: ellipsoids of soft tissue, gas
and fat and tubes of bone (a cortex around marrow) add their path lengths times an
attenuation coefficient, and the film shows ``1 - exp(-sum)`` (MONOCHROME2: bone bright,
air dark). Projection, size, position, rotation, densities, contrast curve, blur, noise,
collimation and a lead marker are random, in the spirit of domain-randomised training.
The chest comes from the chest radiograph generator of ``cxr-abnormal``
(:mod:`dicom_ai_node.testing.phantoms.chest_xr`). The limbs are drawn as the views a fracture
clinic takes: hand and wrist, forearm, elbow and shoulder for the upper extremity; foot,
ankle, knee and hip with femur for the lower. They are caricatures, not patients.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ...domain import BodyPart
from .chest_xr import chest_radiograph
from .fields import Grid, blur, smooth_field

__all__ = ["XR_REGIONS", "region_radiograph"]

_F = npt.NDArray[np.float32]

#: The regions drawn, in the order of the model's outputs.
XR_REGIONS = (
    BodyPart.HEAD,
    BodyPart.CHEST,
    BodyPart.ABDOMEN,
    BodyPart.PELVIS,
    BodyPart.UPPER_EXTREMITY,
    BodyPart.LOWER_EXTREMITY,
)


class _Film:
    """Path lengths times attenuation, accumulated in the grid's coordinates."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.g = Grid(size, rng)
        self.rng = rng
        self.mu: _F = np.zeros((size, size), np.float32)

    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def blob(self, cx: float, cy: float, ax: float, ay: float, k: float, depth: float = 0) -> None:
        """An ellipsoid seen from the front: ``k`` times its thickness (``depth`` = ax)."""
        r2 = ((self.g.x - cx) / ax) ** 2 + ((self.g.y - cy) / ay) ** 2
        self.mu += (k * 2 * (depth or ax)) * np.sqrt(np.clip(1 - r2, 0, None))

    def shell(self, cx: float, cy: float, ax: float, ay: float, t: float, k: float) -> None:
        """A hollow ellipsoid of wall ``t`` (a skull, an iliac wing's rim)."""
        self.blob(cx, cy, ax, ay, k)
        self.blob(cx, cy, ax - t, ay - t, -k, ax - t)

    def bone(self, x0: float, y0: float, x1: float, y1: float, w: float, k: float = 0.0) -> None:
        """A tube of half-width ``w`` from (x0, y0) to (x1, y1): cortex around marrow."""
        k = k or self.u(6, 11)
        px, py = self.g.x - x0, self.g.y - y0
        vx, vy = x1 - x0, y1 - y0
        t = np.clip((px * vx + py * vy) / max(1e-9, vx * vx + vy * vy), 0.0, 1.0)
        d2 = (px - t * vx) ** 2 + (py - t * vy) ** 2
        outer = 2 * w * np.sqrt(np.clip(1 - d2 / w**2, 0, None))
        inner = 2 * 0.6 * w * np.sqrt(np.clip(1 - d2 / (0.6 * w) ** 2, 0, None))
        self.mu += k * (outer - self.u(0.4, 0.7) * inner)

    def ray(self, x: float, y: float, angle: float, lengths: list[float], w: float) -> None:
        """Bones in a row (a metacarpal and its phalanges), each a little narrower."""
        for length in lengths:
            x1, y1 = x + length * math.sin(angle), y - length * math.cos(angle)
            self.bone(x, y, x1, y1, w)
            x, y = x1 + 0.012 * math.sin(angle), y1 - 0.012 * math.cos(angle)
            w *= 0.85


def _head(f: _Film) -> None:
    lateral = f.rng.random() < 0.5
    ax, ay = (f.u(0.62, 0.75), f.u(0.5, 0.6)) if lateral else (f.u(0.5, 0.6), f.u(0.58, 0.7))
    cy = -0.15
    f.blob(0, cy, ax + 0.04, ay + 0.04, f.u(0.25, 0.5))  # scalp and brain
    f.shell(0, cy, ax, ay, f.u(0.025, 0.045), f.u(5, 9))  # calvarium
    face = f.u(0.2, 0.35)
    if lateral:
        side = float(f.rng.choice([-1, 1]))
        f.blob(side * ax * 0.75, cy + ay * 0.7, 0.22, face, f.u(1, 2))  # face
        f.bone(side * ax * 0.2, cy + ay + 0.35, side * ax * 0.85, cy + ay + 0.3, 0.04)  # mandible
        f.bone(side * ax * 0.2, cy + ay + 0.35, side * ax * 0.15, cy + ay * 0.55, 0.035)
        f.blob(side * 0.05, cy + 0.1, 0.05, 0.04, -f.u(0.5, 1))  # sella
        f.bone(-side * 0.1, cy + ay + 0.1, -side * 0.15, 1.1, 0.06)  # cervical spine
    else:
        for s in (-1, 1):  # orbits with their rims
            f.shell(s * 0.2, cy + ay * 0.45, 0.14, 0.12, 0.02, f.u(4, 7))
            f.blob(s * 0.2, cy + ay * 0.45, 0.11, 0.09, -f.u(0.3, 0.8))
        f.blob(0, cy + ay * 0.75, 0.07, 0.12, -f.u(1, 3))  # nasal cavity
        for s in (-1, 1):  # mandible: a U of bone
            f.bone(s * 0.32, cy + ay * 0.6, s * 0.25, cy + ay + 0.3, 0.04)
            f.bone(s * 0.25, cy + ay + 0.3, 0.0, cy + ay + 0.42, 0.04)
        f.blob(0, cy + ay + 0.2, 0.3, 0.25, f.u(0.5, 1))  # maxilla, teeth, soft tissue


def _vertebrae(f: _Film, y0: float, y1: float, w: float) -> None:
    """A column of vertebral bodies from y0 down to y1, with their pedicles."""
    n = max(2, round((y1 - y0) / (2.4 * w)))
    h = (y1 - y0) / n
    for i in range(n):
        y = y0 + (i + 0.5) * h
        f.blob(0, y, w, h * 0.4, f.u(3, 6), w)
        for s in (-1, 1):
            f.blob(s * w * 0.6, y - h * 0.1, w * 0.18, h * 0.15, f.u(4, 8), w * 0.3)


def _abdomen(f: _Film) -> None:
    half = f.u(0.75, 0.95)
    f.blob(0, 0.1, half, 1.3, f.u(0.7, 1.0), 0.7)  # the abdomen
    f.blob(-0.45, -0.55, f.u(0.35, 0.5), 0.35, f.u(0.2, 0.4), 0.5)  # liver
    w = f.u(0.1, 0.14)
    _vertebrae(f, -1.1, 0.75, w)
    for s in (-1, 1):
        f.bone(s * w, 0.0, s * f.u(0.3, 0.4), 0.9, f.u(0.04, 0.06), f.u(0.2, 0.5))  # psoas
        for k in range(2):  # lowest ribs
            y = -0.95 + 0.18 * k
            f.bone(s * (w + 0.05), y, s * half * 0.95, y + f.u(0.2, 0.35), 0.03)
        f.shell(s * f.u(0.45, 0.55), 1.05, f.u(0.28, 0.38), 0.32, 0.04, f.u(4, 7))  # iliac crest
    for _ in range(int(f.rng.integers(3, 12))):  # bowel gas
        f.blob(f.u(-0.6, 0.6), f.u(-0.5, 0.8), f.u(0.04, 0.14), f.u(0.03, 0.1), -f.u(1, 3))


def _pelvis(f: _Film) -> None:
    f.blob(0, 0.0, f.u(0.9, 1.05), 1.2, f.u(0.7, 1.0), 0.7)
    w = f.u(0.1, 0.13)
    _vertebrae(f, -1.1, -0.6, w)
    f.blob(0, -0.35, f.u(0.15, 0.2), 0.3, f.u(3, 6), 0.1)  # sacrum
    for s in (-1, 1):
        f.shell(s * f.u(0.35, 0.42), -0.35, f.u(0.32, 0.4), 0.35, 0.05, f.u(5, 8))  # iliac wing
        hx, hy = s * f.u(0.42, 0.5), f.u(0.15, 0.25)
        f.shell(hx, hy - 0.02, 0.15, 0.15, 0.04, f.u(4, 7))  # acetabulum
        f.blob(hx, hy, 0.12, 0.12, f.u(5, 8))  # femoral head
        tx, ty = hx + s * 0.22, hy + 0.22
        f.bone(hx, hy, tx, ty, 0.06)  # neck
        f.blob(tx, ty, 0.08, 0.09, f.u(4, 7))  # greater trochanter
        f.bone(tx - s * 0.05, ty, tx - s * 0.15, 1.3, f.u(0.08, 0.1))  # shaft
        f.shell(s * 0.2, 0.45, 0.14, 0.13, 0.035, f.u(5, 8))  # obturator ring
        f.bone(s * 0.05, 0.38, s * 0.3, 0.3, 0.04)  # superior pubic ramus
    f.blob(0, 0.35, f.u(0.2, 0.3), 0.15, f.u(0.3, 0.6))  # bladder


def _hand(f: _Film, side: float) -> None:
    wrist = f.u(0.35, 0.55)
    for k in range(2):  # distal radius and ulna
        x = (k - 0.5) * 0.28
        f.bone(x, 1.3, x * 0.8, wrist + 0.08, 0.09 if k else 0.07)
    f.blob(0, wrist - 0.06, 0.26, 0.1, f.u(3, 6), 0.08)  # carpals
    for i in range(4):  # fingers: metacarpal and three phalanges, fanning out
        x = (i - 1.5) * 0.14 * side
        angle = (i - 1.5) * 0.12 * side
        f.ray(x, wrist - 0.15, angle, [f.u(0.35, 0.45), 0.25, 0.17, 0.12], 0.045)
    f.ray(-0.32 * side, wrist - 0.05, -0.7 * side, [0.25, 0.2, 0.14], 0.05)  # thumb


def _foot(f: _Film, side: float) -> None:
    f.blob(0, 0.75, 0.2, 0.25, f.u(3, 6), 0.15)  # calcaneus and talus
    f.blob(0, 0.38, 0.26, 0.14, f.u(3, 6), 0.1)  # midfoot
    for i in range(5):  # metatarsals and short toes, close together
        x = (i - 2) * 0.1 * side
        f.ray(x, 0.28, (i - 2) * 0.04 * side, [f.u(0.4, 0.5), 0.14, 0.08], 0.04 + 0.012 * (i == 0))


def _joint(f: _Film, upper: bool) -> None:
    """Elbow or knee: one bone above, two below, bulbous ends; a patella at the knee."""
    w = f.u(0.12, 0.16) if upper else f.u(0.15, 0.2)
    jy = f.u(-0.1, 0.1)
    f.bone(0, -1.3, 0, jy - 0.1, w)
    f.blob(0, jy - 0.1, w * 2.1, w * 0.9, f.u(3, 6), w)  # condyles
    if upper:
        f.bone(-w * 0.9, jy + 0.1, -w * 1.1, 1.3, w * 0.55)  # radius
        f.bone(w * 0.7, jy + 0.02, w * 0.9, 1.3, w * 0.6)  # ulna, its olecranon higher
    else:
        f.blob(0, jy + 0.13, w * 2.0, w * 0.6, f.u(3, 6), w)  # tibial plateau
        f.bone(0, jy + 0.15, 0, 1.3, w * 0.95)  # tibia
        f.bone(w * 1.7, jy + 0.25, w * 1.8, 1.3, w * 0.35)  # fibula
        f.blob(f.u(-0.05, 0.05), jy - 0.12, w * 0.8, w, f.u(2, 4), w * 0.6)  # patella


def _shoulder(f: _Film, side: float) -> None:
    hx = side * f.u(0.1, 0.25)
    f.blob(hx, -0.2, 0.24, 0.24, f.u(4, 7), 0.2)  # humeral head
    f.bone(hx, -0.2, hx + side * 0.1, 1.3, 0.13)  # humerus
    f.shell(hx - side * 0.3, -0.15, 0.12, 0.25, 0.04, f.u(4, 7))  # glenoid
    f.bone(hx - side * 1.2, -0.7, hx + side * 0.1, -0.55, 0.05)  # clavicle
    for k in range(3):  # ribs behind
        y = -0.3 + 0.35 * k
        f.bone(-side * 1.2, y, hx - side * 0.5, y + 0.15, 0.03, f.u(2, 4))


def _ankle(f: _Film) -> None:
    f.bone(-0.05, -1.3, -0.05, 0.1, 0.17)  # tibia
    f.bone(0.25, -1.3, 0.3, 0.25, 0.07)  # fibula and lateral malleolus
    f.blob(-0.25, 0.12, 0.08, 0.12, f.u(3, 6), 0.1)  # medial malleolus
    f.blob(0.0, 0.35, 0.25, 0.16, f.u(3, 6), 0.2)  # talus
    f.blob(0.0, 0.7, 0.3, 0.22, f.u(2, 5), 0.2)  # calcaneus / hindfoot


def _long_bones(f: _Film, upper: bool) -> None:
    """Forearm or lower leg: two long bones, a wrist or ankle at the bottom."""
    w = f.u(0.08, 0.11) if upper else f.u(0.1, 0.15)
    gap = f.u(0.15, 0.25)
    f.bone(-gap, -1.3, -gap * 0.9, 0.6, w)
    f.bone(gap, -1.3, gap * 0.9, 0.6, w * (0.9 if upper else 0.45))
    if upper:
        f.blob(0, 0.8, 0.28, 0.12, f.u(3, 6), 0.08)  # carpals
        f.ray(0.0, 0.95, 0.0, [0.3], 0.045)
    else:
        f.blob(0, 0.78, 0.25, 0.16, f.u(3, 6), 0.2)  # talus


def _upper(f: _Film) -> None:
    side = float(f.rng.choice([-1, 1]))
    view = int(f.rng.integers(4))
    limb = f.u(0.45, 0.8)
    f.blob(0, 0.0, limb, 1.5, f.u(0.5, 0.9), 0.4)  # soft tissue
    views = (
        lambda: _hand(f, side),
        lambda: _long_bones(f, True),
        lambda: _joint(f, True),
        lambda: _shoulder(f, side),
    )
    views[view]()


def _lower(f: _Film) -> None:
    side = float(f.rng.choice([-1, 1]))
    view = int(f.rng.integers(4))
    limb = f.u(0.55, 0.9)
    f.blob(0, 0.0, limb, 1.5, f.u(0.5, 0.9), 0.45)
    views = (
        lambda: _foot(f, side),
        lambda: _ankle(f),
        lambda: _joint(f, False),
        lambda: _long_bones(f, False),
    )
    views[view]()


_DRAW: dict[BodyPart, Callable[[_Film], None]] = {
    BodyPart.HEAD: _head,
    BodyPart.ABDOMEN: _abdomen,
    BodyPart.PELVIS: _pelvis,
    BodyPart.UPPER_EXTREMITY: _upper,
    BodyPart.LOWER_EXTREMITY: _lower,
}


def region_radiograph(region: BodyPart, size: int, rng: np.random.Generator) -> _F:
    """One radiograph of ``region`` (one of :data:`XR_REGIONS`), display density 0..1.

    Parameters
    ----------
    region:
        What to draw.
    size:
        Rows and columns.
    rng:
        Every random choice.

    Returns
    -------
    numpy.ndarray
        (size, size) float32 as on a MONOCHROME2 image (bone bright).
    """
    if region == BodyPart.CHEST:
        return chest_radiograph(size, rng, str(rng.choice(["", "", "nodule", "effusion"]))).image
    f = _Film(size, rng)
    if rng.random() < 0.5:  # left-right mirror
        f.g.x = -f.g.x
    _DRAW[region](f)
    mu = np.clip(f.mu, 0, None) * f.u(0.6, 1.4)
    img = 1.0 - np.exp(-mu)
    img *= 1.0 + 0.08 * smooth_field(img.shape, 5, rng)
    img = blur(img.astype(np.float32), f.u(0.3, 1.5) * size / 256)
    img = np.clip(img, 0.0, 1.0) ** f.u(0.6, 1.5)
    img = img * f.u(0.8, 1.0) + f.u(0.0, 0.08)
    img += rng.standard_normal(img.shape).astype(np.float32) * f.u(0.005, 0.03)
    for edge in range(4):  # collimation: a bright border on some sides
        if rng.random() < 0.3:
            width = int(size * f.u(0.02, 0.12))
            img = np.rot90(img, edge)
            img[:width] = f.u(0.8, 1.0)
            img = np.rot90(img, -edge)
    if rng.random() < 0.7:  # lead marker
        m = max(2, size // 24)
        r0, c0 = int(size * f.u(0.04, 0.9)), int(size * float(rng.choice([0.06, 0.88])))
        img[r0 : r0 + m, c0 : c0 + m] = 1.0
    out: _F = np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)
    return out
