"""Generated axial MR slices of the head, neck, chest, abdomen and pelvis.

The training and test data of the built-in MR body-region model
(``models/mr_body_region``). The anatomy is that of the CT generator
(:func:`~dicom_ai_node.testing.phantoms.region_ct.region_anatomy`); each slice then gets a random MR
contrast, in the spirit of domain-randomised training (SynthSeg): every tissue class
(air, lung, fat, fluid, soft tissue, marrow, cortical bone) draws its own intensity, so
that T1-like (fat bright, fluid dark), T2-like (fluid bright) and fat-suppressed looks
all occur, followed by a smooth coil-sensitivity field, Rician noise and an arbitrary
scanner gain. Air, lung and cortical bone stay dark, as they are on every MR sequence.
The kidneys of the kidney model's phantom get the same treatment
(:func:`kidney_mr_phantom`), the training data of ``models/mr_kidney_tumour``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...domain import BodyPart
from .region_ct import KIDNEY, TUMOUR, KidneyPhantom, kidney_ct_phantom, region_anatomy

__all__ = ["kidney_mr_phantom", "mr_contrast", "region_mr", "region_mr_slice"]

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
    coarse = rng.uniform(0.65, 1.35, (4, 4)).astype(np.float32)
    rows = np.linspace(0, 3, shape[0], dtype=np.float32)
    cols = np.linspace(0, 3, shape[1], dtype=np.float32)
    across = np.stack([np.interp(cols, np.arange(4), row) for row in coarse])
    field = np.stack([np.interp(rows, np.arange(4), across[:, j]) for j in range(shape[1])], 1)
    return field.astype(np.float32)


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


def kidney_mr_phantom(
    slices: int,
    size: int,
    spacing_mm: tuple[float, float, float],
    seed: int,
    *,
    tumour: bool | None = None,
) -> KidneyPhantom:
    """Axial MR slices through both kidneys, often with a renal tumour.

    The anatomy and truth of :func:`~dicom_ai_node.testing.phantoms.region_ct.kidney_ct_phantom`
    (nephrographic phase), given one random MR look per series (:func:`mr_contrast`).
    The parenchyma then differs from the soft tissue of its slice by a factor of
    0.45-0.75 or its inverse (its cortex brighter than its medulla, 5 % noise), and a
    tumour from the parenchyma by 0.35-0.7 or its inverse (renal tumours are darker or
    brighter than the cortex on T2 and after gadolinium), with 12 % texture; without
    that, random tissue signals could make them one.

    Returns
    -------
    KidneyPhantom
        ``hu`` holds the MR signal (uint16 values in an int16 array: 0 .. 32767).
    """
    ct = kidney_ct_phantom(slices, size, spacing_mm, seed, tumour=tumour, contrast=True)
    rng = np.random.default_rng([seed, 73])
    look = int(rng.integers(2**31))

    def darker_or_brighter(low: float, high: float) -> float:
        return float(
            rng.uniform(low, high) if rng.random() < 0.5 else rng.uniform(1 / high, 1 / low)
        )

    organ = darker_or_brighter(0.45, 0.75)  # parenchyma against the soft tissue around
    factor = darker_or_brighter(0.35, 0.7)  # tumour against parenchyma
    out = np.empty(ct.hu.shape, np.int16)
    for index in range(slices):
        hu = ct.hu[index].astype(np.float32)
        signal = mr_contrast(hu, rng, look)
        soft = (hu > 20) & (hu < 80) & (ct.labels[index] == 0)
        level = float(np.median(signal[soft])) if soft.any() else float(np.median(signal))
        kidney = (ct.labels[index] == KIDNEY) & (hu > -20)  # not the sinus fat
        if kidney.any():  # keep the cortex brighter than the medulla, as after contrast
            shade = hu[kidney] / max(1.0, float(hu[kidney].mean()))
            noise = 1 + 0.05 * rng.standard_normal(int(kidney.sum()))
            signal[kidney] = level * organ * shade * noise
        mass = ct.labels[index] == TUMOUR
        if mass.any():
            texture = 1 + 0.12 * rng.standard_normal(int(mass.sum()))
            signal[mass] = level * organ * factor * texture
        out[index] = np.clip(np.rint(signal), 0, 32767)
    return KidneyPhantom(out, ct.labels, ct.spacing_mm)
