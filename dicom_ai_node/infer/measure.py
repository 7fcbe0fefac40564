"""Infer: measurements of a labelled region (TID 300 / TID 1419 NUMs), numpy only.

The measurement names a manifest may ask for (``measurements = [...]``) and the codes
they are reported with:

* ``volume``: Volume (118565006, SCT) in mm3, voxels x voxel volume;
* ``long_axis``: Long Axis (103339001, SCT) in mm, the longest in-plane diameter, edge
  to edge, of the region's largest connected part on any slice (RECIST 1.1 style,
  :func:`~dicom_ai_node.geometry.max_feret_diameter_mm`);
* ``mean_hu``: Attenuation Coefficient (112031, DCM), derivation Mean (373098007, SCT),
  in Hounsfield units ([hnsf'U], UCUM): the mean rescaled value inside the region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ..domain import Code, Measurement, Volume
from ..geometry import largest_component, max_feret_diameter_mm
from .manifest import ModelManifest

__all__ = [
    "ATTENUATION",
    "HU",
    "LONG_AXIS",
    "MEAN",
    "MM",
    "MM3",
    "VOLUME",
    "label_measurements",
    "region_measurements",
]

VOLUME = Code("118565006", "SCT", "Volume")
MM3 = Code("mm3", "UCUM", "cubic millimeter")
LONG_AXIS = Code("103339001", "SCT", "Long Axis")
MM = Code("mm", "UCUM", "millimeter")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")


def long_axis_mm(mask: npt.NDArray[np.bool_], row_mm: float, column_mm: float) -> float:
    """The longest in-plane diameter of a (slices, rows, columns) mask on any slice; 0 if empty."""
    return max(
        (
            max_feret_diameter_mm(largest_component(plane), row_mm, column_mm)
            for plane in mask
            if plane.any()
        ),
        default=0.0,
    )


def region_measurements(
    label_value: int,
    mask: npt.NDArray[np.bool_],
    values: npt.NDArray[np.float32],
    volume: Volume,
    wanted: Sequence[str],
) -> list[Measurement]:
    """The ``wanted`` measurements of one region.

    Parameters
    ----------
    label_value:
        The label the measurements describe.
    mask:
        The region, (slices, rows, columns): the whole volume or a box of it.
    values:
        The rescaled voxel values under ``mask`` (same shape), for ``mean_hu``.
    volume:
        Gives the voxel spacing.
    wanted:
        Names from :data:`dicom_ai_node.infer.manifest.MEASUREMENTS`, in report order.
    """
    _, row_mm, column_mm = volume.spacing_mm
    out = []
    if "volume" in wanted:
        voxels = float(np.count_nonzero(mask))
        out.append(Measurement(label_value, VOLUME, voxels * volume.voxel_volume_mm3, MM3))
    if "long_axis" in wanted:
        out.append(Measurement(label_value, LONG_AXIS, long_axis_mm(mask, row_mm, column_mm), MM))
    if "mean_hu" in wanted and mask.any():  # no mean of nothing
        mean = float(values[mask].mean(dtype=np.float64))
        out.append(Measurement(label_value, ATTENUATION, mean, HU, derivation=MEAN))
    return out


def label_measurements(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8], volume: Volume
) -> tuple[Measurement, ...]:
    """Each label's measurements: its own list, else ``postprocess.measurements``.

    See above for what each name measures; labels reported per connected region
    (``instances``) are measured by :func:`.instances.segmentation_output` instead.
    """
    default = tuple(manifest.postprocess.get("measurements", []))
    out: list[Measurement] = []
    for label in manifest.labels:
        wanted = label.measurements or default
        if not wanted or label.instances:
            continue
        mask = label_map == label.value  # one pass per label over the uint8 map
        out += region_measurements(label.value, mask, volume.voxels, volume, wanted)
    return tuple(out)


#: UCUM "1": a dimensionless value (a ratio, a probability).
NO_UNITS = Code("1", "UCUM", "no units")


def ratio_measurements(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8]
) -> tuple[Measurement, ...]:
    """``postprocess.ratios``: voxels of some labels over voxels of others.

    Each entry has ``label`` (whose SR group reports it), ``numerator`` and
    ``denominator`` (label values, summed) and ``code`` (the concept, e.g. a private
    ``99...`` scheme code for a ventricle-to-brain ratio). The voxel size cancels out.
    A zero denominator gives no measurement.
    """
    out: list[Measurement] = []
    for ratio in manifest.postprocess.get("ratios", []):
        above = sum(int(np.count_nonzero(label_map == v)) for v in ratio["numerator"])
        below = sum(int(np.count_nonzero(label_map == v)) for v in ratio["denominator"])
        if below:
            concept = Code(*ratio["code"])
            out.append(Measurement(int(ratio["label"]), concept, round(above / below, 5), NO_UNITS))
    return tuple(out)
