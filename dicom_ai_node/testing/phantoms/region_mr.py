"""Testing: axial MR slices of the head, neck, chest, abdomen and pelvis.

The training and test data of the built-in MR body-region model
(``models/mr_body_region``). The anatomy is that of the CT generator
(:func:`~dicom_ai_node.testing.phantoms.region_ct.region_anatomy`); each slice then gets a random MR
contrast, in the spirit of domain-randomised training (SynthSeg): every tissue class
(air, lung, fat, fluid, soft tissue, marrow, cortical bone) draws its own intensity, so
that T1-like (fat bright, fluid dark), T2-like (fluid bright) and fat-suppressed looks
all occur, followed by a smooth coil-sensitivity field, Rician noise and an arbitrary
scanner gain. Air, lung and cortical bone stay dark, as they are on every MR sequence.
The kidneys of the kidney model's phantom get the same treatment
(:func:`~dicom_ai_node.testing.phantoms.kidney_mr.kidney_mr_phantom`), the training data
of ``models/mr_kidney_tumour``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...domain import BodyPart
from .fields import upsample
from .region_ct import region_anatomy

__all__ = ["mr_contrast", "region_mr", "region_mr_slice"]

_F = npt.NDArray[np.float32]

#: HU anchors of the tissue classes the generator paints, and the range of MR signal
#: (0..1 before gain) each may take: air, lung, fat, fluid, brain / organ, muscle,
#: marrow, cortical bone.
_ANCHORS: tuple[tuple[float, float, float], ...] = (
    (-1000.0, 0.0, 0.03),
    (-800.0, 0.0, 0.08),
    (-100.0, 0.05, 1.0),
    (6.0, 0.03, 1.0),
    (33.0, 0.2, 0.75),
    (48.0, 0.15, 0.6),
    (400.0, 0.2, 0.9),
    (1000.0, 0.0, 0.1),
)


def _smooth(shape: tuple[int, int], rng: np.random.Generator) -> _F:
    """A smooth field of about 1 (coil sensitivity), from a 4x4 grid of random values."""
    return upsample(rng.uniform(0.65, 1.35, (4, 4)).astype(np.float32), shape)


def mr_contrast(hu: _F, rng: np.random.Generator, look: int | None = None) -> _F:
    """Give tissues painted in HU a random MR contrast, field, noise and gain.

    Parameters
    ----------
    hu:
        (rows, columns) tissues in HU without scanner noise
        (:func:`~dicom_ai_node.testing.phantoms.region_ct.region_anatomy`).
    rng:
        The noise, and every other choice when ``look`` is ``None``.
    look:
        Seed of the sequence's look (tissue signals, field, blur, noise level, gain), so
        that the slices of one series share it.

    Returns
    -------
    numpy.ndarray
        float32 signal in arbitrary units (0 .. a few thousand), as MR stores it.
    """
    series = rng if look is None else np.random.default_rng(look)
    anchors = np.array([a for a, _, _ in _ANCHORS], np.float32)
    signal = np.array([series.uniform(low, high) for _, low, high in _ANCHORS], np.float32)
    img = np.interp(hu, anchors, signal).astype(np.float32)
    img *= _smooth(img.shape, series)
    w = float(series.uniform(0.0, 0.6))  # partial volume / reconstruction blur
    padded = np.pad(img, 1, mode="edge")
    rows, cols = img.shape
    box = sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3))
    img = (1 - w) * img + w * box / 9
    sigma, gain = float(series.uniform(0.005, 0.05)), float(series.uniform(200.0, 3000.0))
    real = img + rng.normal(0.0, sigma, img.shape)
    imag = rng.normal(0.0, sigma, img.shape)
    out: _F = (np.sqrt(real**2 + imag**2) * gain).astype(np.float32)
    return out


def region_mr_slice(
    region: BodyPart, size: int, z: float, rng: np.random.Generator, fov_mm: float | None = None
) -> _F:
    """One axial MR slice of ``region`` at level ``z`` (0 caudal .. 1 cranial).

    The parameters are those of :func:`~dicom_ai_node.testing.phantoms.region_ct.region_slice`.
    """
    return mr_contrast(region_anatomy(region, size, z, rng, fov_mm), rng)


def region_mr(region: BodyPart, slices: int, size: int, seed: int) -> npt.NDArray[np.uint16]:
    """A series of ``slices`` axial MR slices through ``region`` (caudal first), uint16.

    One contrast, field of view and gain for the series, as one sequence gives; each
    slice's anatomy is drawn anew at its own level.
    """
    rng = np.random.default_rng([seed, 71])
    levels = np.linspace(0.0, 1.0, slices) if slices > 1 else np.array([0.5])
    fov = float(rng.uniform(*_FOV_MR[region]))
    look = int(rng.integers(2**31))
    out = np.empty((slices, size, size), np.uint16)
    for k, z in enumerate(levels):
        hu = region_anatomy(region, size, float(z), rng, fov)
        out[k] = np.clip(np.rint(mr_contrast(hu, rng, look)), 0, 65535)
    return out


#: Fields of view of MR series (mm), a little tighter than CT's.
_FOV_MR = {
    BodyPart.HEAD: (200.0, 260.0),
    BodyPart.NECK: (180.0, 260.0),
    BodyPart.CHEST: (320.0, 450.0),
    BodyPart.ABDOMEN: (320.0, 450.0),
    BodyPart.PELVIS: (320.0, 450.0),
}
