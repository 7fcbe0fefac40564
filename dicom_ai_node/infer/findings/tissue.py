"""Infer: a brain mask split by intensity into parenchyma and intracranial CSF, measured.

The split is a fixed rule, not learnt: on a T1-weighted image CSF is the darkest tissue
inside the brain mask, grey matter in between, white matter the brightest. The mask's
intensities are divided into three classes by Otsu's method extended to two thresholds
(maximum between-class variance; Liao, Chen and Chung, J. Inf. Sci. Eng. 17, 2001,
713-727); voxels at or below the lower threshold are CSF (label 2), the others brain
parenchyma (label 1). Partial-volume voxels at the brain's surface and bias-field
shading make it a coarse estimate; the mask itself is the network's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...domain import ModelOutput, Volume
from ..manifest import ModelManifest
from .measure import label_measurements, ratio_measurements, total_measurements

__all__ = ["BINS", "brain_output", "csf_threshold", "split_csf"]

#: Histogram bins for the thresholds, between the mask's 0.5 and 99.5 percentiles.
BINS = 128
#: Parenchyma and CSF label values.
PARENCHYMA, CSF = 1, 2


def csf_threshold(values: npt.NDArray[np.float32]) -> float:
    """The lower of the two thresholds that best split ``values`` into three classes.

    Parameters
    ----------
    values:
        The intensities inside the brain mask (any order).

    Returns
    -------
    float
        The intensity at or below which a voxel counts as CSF.
    """
    low, high = np.percentile(values, [0.5, 99.5])
    if not high > low:
        return float(low)
    counts, edges = np.histogram(np.clip(values, low, high), bins=BINS, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    p = counts / counts.sum()
    w = np.cumsum(p)  # weight of bins 0..i
    m = np.cumsum(p * centres)  # first moment of bins 0..i
    total = m[-1]
    # classes [0..i], [i+1..j], [j+1..]: between-class variance for every i < j
    i, j = np.triu_indices(BINS - 1, k=1)
    w0, w1, w2 = w[i], w[j] - w[i], 1.0 - w[j]
    m0, m1, m2 = m[i], m[j] - m[i], total - m[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = m0**2 / w0 + m1**2 / w1 + m2**2 / w2
    between[(w0 <= 0) | (w1 <= 0) | (w2 <= 0)] = -np.inf
    best = int(np.argmax(between))
    return float(edges[i[best] + 1])


def split_csf(
    mask: npt.NDArray[np.bool_], voxels: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """The label map: 1 brain parenchyma, 2 intracranial CSF (:func:`csf_threshold`)."""
    label_map = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return label_map
    inside = voxels[mask]
    threshold = csf_threshold(inside)
    label_map[mask] = np.where(inside <= threshold, CSF, PARENCHYMA).astype(np.uint8)
    return label_map


def brain_output(
    manifest: ModelManifest, mask: npt.NDArray[np.bool_], volume: Volume
) -> ModelOutput:
    """Labels and measurements of a brain mask in the volume's geometry.

    Parameters
    ----------
    manifest:
        Its labels (1 parenchyma, 2 CSF), ``postprocess.measurements`` (each label's
        volume), ``postprocess.totals`` (the total intracranial volume: both labels) and
        ``postprocess.ratios`` (the brain parenchymal fraction: 1 over 1 and 2).
    mask:
        The brain mask (slices, rows, columns), the volume's voxel order.
    volume:
        The T1-weighted volume: intensities and spacing.

    Returns
    -------
    ModelOutput
        The label map and the measurements, for the SEG and the SR.
    """
    label_map = split_csf(mask, volume.voxels)
    measurements = (
        *label_measurements(manifest, label_map, volume),
        *total_measurements(manifest, label_map, volume),
        *ratio_measurements(manifest, label_map),
    )
    return ModelOutput(labels=manifest.labels, label_map=label_map, measurements=measurements)
