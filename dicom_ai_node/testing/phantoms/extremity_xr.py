"""Testing: radiographs of a forearm or lower leg, with or without a labelled fracture.

The training and test data of the built-in fracture model (``models/xr_fracture``), and
the limbs of the radiograph body-region model's training data. Nothing is downloaded:
every image is drawn from a seed, in the coordinates and display densities of the chest
radiographs (:mod:`dicom_ai_node.testing.phantoms.chest_xr`): values in 0..1 as on a
MONOCHROME2 image (bone bright, air dark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fields import Grid, blur, smooth_field

__all__ = ["ExtremityRadiograph", "extremity_radiograph"]


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

    image: npt.NDArray[np.float32]
    fracture: bool
    mask: npt.NDArray[np.bool_]


def _rotated(g: Grid, angle: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
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
    g = Grid(size, rng)
    angle = math.radians(float(rng.uniform(-25, 25)))
    u, v = _rotated(g, angle)
    img = np.zeros((size, size), np.float32)
    limb_half = float(rng.uniform(0.42, 0.6))
    taper = float(rng.uniform(0.0, 0.12))
    limb = np.abs(v) < limb_half - taper * u
    soft = float(rng.uniform(0.25, 0.4))
    img[limb] = soft + 0.05 * smooth_field((size, size), 6, rng)[limb]
    texture = smooth_field((size, size), 40, rng)
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
    img = blur(img, float(rng.uniform(0.3, 1.2)) * size / 256)
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
