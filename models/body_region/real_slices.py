"""Training: augmented axial slices of the training slabs of the real head volumes.

The body-region models see real anatomy in training through two real volumes that Debian
packages ship (read by :mod:`dicom_ai_node.testing.real_volumes`): the InVesalius head CT
(``invesalius-examples``, GPL-2) for the CT model and Colin27's T1 (``mricron-data``,
BSD-3-clause) for the MR model, both labelled HEAD. Only a volume's training part is read
(:func:`~dicom_ai_node.testing.real_volumes.training_part`, the inferior slab below
``HELD_OUT``); the superior slab is the test series of the models' real-image checks and is
never read here. Each slice drawn is rotated, zoomed (in: a crop; out: more background
around the head), shifted and possibly turned by a right angle, given intensity changes
(CT: gain, offset, noise; MR: gain, gamma, a smooth coil field, noise), then area-resized
to 64x64 as the node resizes what it reads. Every draw comes from the generator passed in:
a run is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from dicom_ai_node.testing.phantoms.fields import smooth_field
from dicom_ai_node.testing.real_volumes import RealVolume, training_part

from .net import INPUT_SIZE

__all__ = ["Augment", "augmented_slices", "training_slices"]


@dataclass(frozen=True)
class Augment:
    """How far each drawn slice is moved and changed (recorded with the run's settings).

    ``zoom`` is log-uniform, above 1 a crop; a ``crop_share`` of the slices gets a strong
    crop from ``crop_zoom`` instead (one organ or part of the brain filling the image). A
    view of which less than ``min_body`` is head (above -500 HU; for MR above a tenth of
    the slab's 99th percentile) is drawn again, up to ``tries`` times: a crop of the air
    or of the head holder alone shows no region.
    """

    rotation_deg: float = 25.0
    zoom: tuple[float, float] = (0.6, 1.8)
    crop_share: float = 0.25
    crop_zoom: tuple[float, float] = (1.8, 5.0)
    shift: float = 0.2
    right_angle_share: float = 0.15
    min_body: float = 0.15
    tries: int = 20


def training_slices(volume: RealVolume) -> npt.NDArray[np.float32]:
    """The axial slices of ``volume`` that training may read: its training part only (a
    copy: the volume's own voxels are read-only)."""
    return np.array(training_part(volume).voxels, dtype=np.float32)


def _moved(image: Tensor, rng: np.random.Generator, aug: Augment, background: float) -> Tensor:
    """One slice (1, 1, H, W) rotated, zoomed and shifted; what comes into view is
    ``background``."""
    if rng.uniform() < aug.crop_share:
        zoom = math.exp(rng.uniform(*np.log(aug.crop_zoom)))
    else:
        zoom = math.exp(rng.uniform(*np.log(aug.zoom)))
    angle = math.radians(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
    if rng.uniform() < aug.right_angle_share:
        angle += math.pi / 2 * int(rng.integers(1, 4))
    # a crop may look at any part of the head, a zoom-out stays about centred
    reach = aug.shift + max(0.0, 1.0 - 1.0 / zoom)
    tx, ty = rng.uniform(-reach, reach, size=2)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=torch.float32)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    moved = F.grid_sample(image - background, grid, mode="bilinear", align_corners=False)
    return moved + background


def _ct_intensity(image: Tensor, rng: np.random.Generator) -> Tensor:
    """Scanner and reconstruction differences: HU gain 0.95-1.05, offset +-20 HU, noise
    up to 25 HU (before the area resize, as a scanner's noise is)."""
    noise = torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32))
    gain, offset, sigma = rng.uniform(0.95, 1.05), rng.uniform(-20, 20), rng.uniform(0, 25)
    return image * gain + offset + noise * sigma


def _mr_intensity(image: Tensor, rng: np.random.Generator) -> Tensor:
    """Other sequences and coils: gamma 0.6-1.6 on the 0..1-scaled signal, a smooth coil
    field x0.6-1.4, Rician-like noise up to 6 % of full signal, a gain of 0.2-5."""
    top = float(torch.quantile(image.flatten(), 0.99)) or 1.0
    x = (image / top).clamp(min=0.0) ** rng.uniform(0.6, 1.6)
    h, w = image.shape[-2:]
    field = 1.0 + rng.uniform(0.0, 0.4) * smooth_field((h, w), 4, rng).clip(-1, 1)
    x = x * torch.from_numpy(field)
    sigma = rng.uniform(0.0, 0.06)
    real = x + sigma * torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32))
    imag = sigma * torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32))
    return torch.sqrt(real**2 + imag**2) * top * rng.uniform(0.2, 5.0)


def augmented_slices(
    volume: RealVolume, count: int, rng: np.random.Generator, aug: Augment = Augment()
) -> Tensor:
    """``count`` augmented slices of ``volume``'s training part, (count, 1, 64, 64) float32
    in the volume's unit (HU for CT)."""
    slices = training_slices(volume)
    ct = volume.modality == "CT"
    background = -1000.0 if ct else 0.0
    body = -500.0 if ct else 0.1 * float(np.percentile(slices, 99))
    out = []
    for _ in range(count):
        for _ in range(aug.tries):
            image = torch.from_numpy(slices[int(rng.integers(0, len(slices)))])[None, None]
            if ct:
                image = image.clamp(min=-1024.0)  # outside the scan circle: air
            image = _moved(image, rng, aug, background)
            if float((image > body).float().mean()) >= aug.min_body:
                break
        image = _ct_intensity(image, rng) if ct else _mr_intensity(image, rng)
        out.append(F.interpolate(image, size=(INPUT_SIZE, INPUT_SIZE), mode="area"))
    return torch.cat(out)
