"""Testing: axial MR volumes through both kidneys, often with a labelled renal tumour.

The training data of the built-in MR kidney tumour model (``models/mr_kidney_tumour``) and
the studies of its tests: the anatomy and truth of the CT kidney phantom
(:mod:`dicom_ai_node.testing.phantoms.kidney_ct`) given one random MR look per series, as
the MR body-region slices get theirs (:func:`~.region_mr.mr_contrast`).
"""

from __future__ import annotations

import numpy as np

from .kidney_ct import KIDNEY, TUMOUR, KidneyPhantom, kidney_ct_phantom
from .region_mr import mr_contrast

__all__ = ["kidney_mr_phantom"]


def kidney_mr_phantom(
    slices: int,
    size: int,
    spacing_mm: tuple[float, float, float],
    seed: int,
    *,
    tumour: bool | None = None,
) -> KidneyPhantom:
    """Axial MR slices through both kidneys, often with a renal tumour.

    The anatomy and truth of :func:`~dicom_ai_node.testing.phantoms.kidney_ct.kidney_ct_phantom`
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
