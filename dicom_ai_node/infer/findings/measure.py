"""Infer: measurements of a labelled region (TID 300 / TID 1419 NUMs), numpy only.

The measurement names a manifest may ask for (``measurements = [...]``) and the codes
they are reported with:

* ``volume``: Volume (118565006, SCT) in millilitres (UCUM ``ml``), voxels x voxel
  volume / 1000, unrounded (the SR's NUM keeps it: its Numeric Value is the closest DS
  of 16 characters, its Floating Point Value the double itself, PS3.3 C.18.1);
* ``long_axis``: Long Axis (103339001, SCT) in mm, the longest in-plane diameter, edge
  to edge, of the region's largest connected part on any slice (RECIST 1.1 style,
  :func:`~dicom_ai_node.geometry.max_feret_diameter_mm`);
* ``mean_hu``: Attenuation Coefficient (112031, DCM), derivation Mean (373098007, SCT),
  in Hounsfield units ([hnsf'U], UCUM): the mean rescaled value inside the region.

Shape features, measured on the slice where the region's cross-section is largest (the
only one of a projection or ultrasound image), as a reader measures a nodule on the image
showing it largest (ACR TI-RADS, BI-RADS ultrasound lexicon):

* ``short_axis``: Short Axis (103340004, SCT) in mm, the region's width across its long
  axis (:func:`~dicom_ai_node.geometry.caliper_axes_mm`);
* ``area``: Area (42798000, SCT) in mm2, of that cross-section;
* ``depth_to_width``: its height on the image (top to bottom: along the beam on
  ultrasound, the anteroposterior depth) over its width (left to right, across the probe);
  above 1 a nodule is "taller than wide" (TI-RADS) or "not parallel" (BI-RADS);
* ``solidity``: its area over the area of its convex hull, 1 for a convex region and
  lower for a lobulated or irregular margin.

No standard code exists for the last two: they carry private codes of the ``99DAIN``
scheme, listed in docs/models.md.

Units are UCUM codes as PS3.16 spells them (CID 7181 "Abstract Multi-dimensional Image
Model Component Units": ``mm``, ``mm2``, ``ml`` as in ``ml/min``). The values stay
exact; :func:`format_measurement` rounds them only where the node writes text a person
reads. The manifest's thresholds (``min_instance_mm3``) stay settings in mm3, compared
with voxel counts, never with these values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ...domain import Code, Measurement, Volume
from ...geometry import caliper_axes_mm, convex_area_mm2, largest_component, max_feret_diameter_mm
from ..manifest import ModelManifest

__all__ = [
    "AREA",
    "ATTENUATION",
    "DEPTH_TO_WIDTH",
    "HU",
    "LONG_AXIS",
    "MEAN",
    "ML",
    "MM",
    "MM2",
    "MM3_PER_ML",
    "NO_UNITS",
    "SHAPE_FEATURES",
    "SHORT_AXIS",
    "SOLIDITY",
    "VOLUME",
    "format_measurement",
    "format_value",
    "label_measurements",
    "long_axis_mm",
    "ratio_measurements",
    "region_measurements",
    "total_measurements",
    "volume_ml",
]

VOLUME = Code("118565006", "SCT", "Volume")
#: Millilitre: UCUM ``ml``, as PS3.16 writes it (``ml/min``, ``Bq/ml`` of CID 7181).
ML = Code("ml", "UCUM", "milliliter")
#: Cubic millimetres in a millilitre (UCUM: 1 ml = 1 cm3).
MM3_PER_ML = 1000.0
LONG_AXIS = Code("103339001", "SCT", "Long Axis")
MM = Code("mm", "UCUM", "millimeter")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
SHORT_AXIS = Code("103340004", "SCT", "Short Axis")
AREA = Code("42798000", "SCT", "Area")
MM2 = Code("mm2", "UCUM", "square millimeter")
DEPTH_TO_WIDTH = Code("DTW", "99DAIN", "Depth-to-width ratio")
SOLIDITY = Code("SOLIDITY", "99DAIN", "Solidity")
#: UCUM "1": a dimensionless value (a ratio, a probability).
NO_UNITS = Code("1", "UCUM", "no units")

#: The shape features, measured on a region's largest cross-section.
SHAPE_FEATURES = ("short_axis", "area", "depth_to_width", "solidity")


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


def volume_ml(voxels: int, volume: Volume) -> float:
    """The volume of ``voxels`` voxels of ``volume`` in millilitres, unrounded.

    Parameters
    ----------
    voxels:
        How many voxels.
    volume:
        Gives the voxel spacing.

    Returns
    -------
    float
        ``voxels * voxel_volume_mm3 / 1000``: the value of a Volume NUM (PS3.16 TID 300)
        in UCUM ``ml``.
    """
    return voxels * volume.voxel_volume_mm3 / MM3_PER_ML


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
        voxels = int(np.count_nonzero(mask))
        out.append(Measurement(label_value, VOLUME, volume_ml(voxels, volume), ML))
    if "long_axis" in wanted:
        out.append(Measurement(label_value, LONG_AXIS, long_axis_mm(mask, row_mm, column_mm), MM))
    if "mean_hu" in wanted and mask.any():  # no mean of nothing
        mean = float(values[mask].mean(dtype=np.float64))
        out.append(Measurement(label_value, ATTENUATION, mean, HU, derivation=MEAN))
    if any(name in wanted for name in SHAPE_FEATURES) and mask.any():
        out += _shape_features(label_value, mask, row_mm, column_mm, wanted)
    return out


def _shape_features(
    label_value: int,
    mask: npt.NDArray[np.bool_],
    row_mm: float,
    column_mm: float,
    wanted: Sequence[str],
) -> list[Measurement]:
    """:data:`SHAPE_FEATURES` of the largest connected part of the largest cross-section."""
    areas = mask.reshape(len(mask), -1).sum(axis=1)
    plane = largest_component(mask[int(np.argmax(areas))])
    out = []
    if "short_axis" in wanted:
        out.append(
            Measurement(label_value, SHORT_AXIS, caliper_axes_mm(plane, row_mm, column_mm)[1], MM)
        )
    area = float(np.count_nonzero(plane)) * row_mm * column_mm
    if "area" in wanted:
        out.append(Measurement(label_value, AREA, area, MM2))
    if "depth_to_width" in wanted:
        rows = np.flatnonzero(plane.any(axis=1))
        cols = np.flatnonzero(plane.any(axis=0))
        depth = (rows[-1] - rows[0] + 1) * row_mm
        width = (cols[-1] - cols[0] + 1) * column_mm
        out.append(Measurement(label_value, DEPTH_TO_WIDTH, round(depth / width, 4), NO_UNITS))
    if "solidity" in wanted:
        hull = convex_area_mm2(plane, row_mm, column_mm)
        solidity = min(1.0, area / hull) if hull > 0 else 1.0
        out.append(Measurement(label_value, SOLIDITY, round(solidity, 4), NO_UNITS))
    return out


def label_measurements(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8], volume: Volume
) -> tuple[Measurement, ...]:
    """Each label's measurements: its own list, else ``postprocess.measurements``.

    See above for what each name measures; labels reported per connected region
    (``instances``) are measured by :func:`.lesions.segmentation_output` instead.
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


def ratio_measurements(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8]
) -> tuple[Measurement, ...]:
    """``postprocess.ratios``: voxels of some labels over voxels of others.

    Each entry has ``label`` (whose SR group reports it), ``numerator`` and
    ``denominator`` (label values, summed) and ``code`` (the concept, e.g. a private
    ``99...`` scheme code for a ventricle-to-brain ratio). The voxel size cancels out.
    A zero denominator gives no measurement.

    An entry with ``grades`` = {``code``, ``below``} also reports a grade in the same
    group: 0 at or above the first edge of ``below`` (strictly decreasing), one more for
    each edge the ratio falls below; e.g. an MTA-style grade 0..4 from a hippocampal
    occupancy and four edges.
    """
    out: list[Measurement] = []
    for ratio in manifest.postprocess.get("ratios", []):
        above = sum(int(np.count_nonzero(label_map == v)) for v in ratio["numerator"])
        below = sum(int(np.count_nonzero(label_map == v)) for v in ratio["denominator"])
        if below:
            concept = Code(*ratio["code"])
            value = round(above / below, 5)
            out.append(Measurement(int(ratio["label"]), concept, value, NO_UNITS))
            if "grades" in ratio:
                grades = ratio["grades"]
                grade = sum(value < edge for edge in grades["below"])
                out.append(
                    Measurement(int(ratio["label"]), Code(*grades["code"]), float(grade), NO_UNITS)
                )
    return tuple(out)


def total_measurements(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8], volume: Volume
) -> tuple[Measurement, ...]:
    """``postprocess.totals``: the volume of several labels together.

    Each entry has ``label`` (whose SR group reports it), ``labels`` (the label values
    summed) and ``code`` (the concept, e.g. a total intracranial volume); the value is a
    volume in millilitres (UCUM ``ml``) like :func:`volume_ml`'s.
    """
    out: list[Measurement] = []
    for total in manifest.postprocess.get("totals", []):
        voxels = sum(int(np.count_nonzero(label_map == v)) for v in total["labels"])
        concept = Code(*total["code"])
        out.append(Measurement(int(total["label"]), concept, volume_ml(voxels, volume), ML))
    return tuple(out)


#: Decimals shown for these UCUM units (lengths and areas to 0.1 mm, 0.1 mm2; a
#: percentage to 0.1 %; a mean density in whole Hounsfield units).
_DECIMALS = {"mm": 1, "mm2": 1, "%": 1, "[hnsf'U]": 0}
#: How a unit is written after a value; the UCUM code itself (what a viewer shows)
#: when not here.
_PRINTED = {"1": "", "[hnsf'U]": "HU"}
#: From this many millilitres up, volumes are shown to 0.1 ml.
_ML_TENTHS_FROM = 10.0


def _significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, without exponent or trailing zeros
    (whole numbers keep all their digits: 1234 stays 1234)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: float, unit: Code) -> str:
    """A measured value rounded as a person reads it, with its unit.

    The SR keeps the exact value (PS3.16 TID 300 NUM); this is only for text the node
    writes for people (``models add``, logs). Volumes (UCUM ``ml``) of 10 ml or more to
    0.1 ml, smaller ones to 3 significant digits (a 65 mm3 nodule is "0.065 ml");
    lengths and areas to 0.1 mm and 0.1 mm2; percentages to 0.1 %; mean densities in
    whole HU; anything else (ratios, probabilities, counts: UCUM "1") to 3 significant
    digits.

    Parameters
    ----------
    value:
        The measured value, in ``unit``.
    unit:
        A UCUM unit code (PS3.16 CID 7181).

    Returns
    -------
    str
        E.g. "2220.7 ml", "0.065 ml", "12.3 mm", "35 HU", "0.862".
    """
    if unit.value == ML.value and abs(value) >= _ML_TENTHS_FROM:
        text = f"{value:.1f}"
    elif unit.value in _DECIMALS:
        text = f"{value:.{_DECIMALS[unit.value]}f}"
    else:
        text = _significant(value, 3)
    printed = _PRINTED.get(unit.value, unit.value)
    return f"{text} {printed}" if printed else text


def format_measurement(measurement: Measurement) -> str:
    """``"<concept meaning> = <value unit>"``, the value as :func:`format_value` rounds
    it: e.g. "Volume = 2220.7 ml"."""
    return f"{measurement.concept.meaning} = {format_value(measurement.value, measurement.unit)}"
