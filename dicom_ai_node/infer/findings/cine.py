"""Infer: the left-ventricular function measures of a cine segmentation.

A cine model (``preprocess.geometry = "cine"``) labels the left-ventricular cavity (and
optionally the myocardium) on every frame. Here the frames are summed per phase: the
cavity's area over the cycle gives end-diastole (largest) and end-systole (smallest),
the same phase at every position. What is reported:

* the cavity at end-diastole (label value of the cavity, "<name>, end-diastole"), the
  myocardium at end-diastole (its own label, if the manifest has ``myocardium_label``,
  with its volume or area: the basis of a myocardial mass) and the cavity at
  end-systole (a new label, "<name>, end-systole"); every other frame is left
  unlabelled, so the SEG and the SR show the two phases a reader measures;
* with several positions (a short-axis stack): the end-diastolic and end-systolic
  volumes (Volume, 118565006 SCT, UCUM ``ml``) by disc summation (area x distance between
  positions, the Simpson method of cardiac MR) and the ejection fraction (10230-1, LN,
  "Left ventricular Ejection fraction", %), over the positions sent;
* with one position: the end-diastolic and end-systolic areas (Area, 42798000 SCT,
  mm2) and the fractional area change, (EDA - ESA) / EDA (FAC, 99DAIN, %), the
  ejection-fraction-like measure of one slice. No ejection fraction is made up from one
  slice: that needs a shape assumption (how the cavity shortens along its axis) that one
  slice cannot check.

Volumes and areas are exact (PS3.16 TID 300 NUMs, as :mod:`.measure` reports them);
the ejection fraction and the fractional area change are percentages to 0.1 %, as they
are reported clinically.

Manifest keys (``postprocess``): ``cavity_label`` (default 1), ``myocardium_label``.
Numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from ...domain import Code, Measurement, ModelOutput, OutputLabel, Volume
from ...errors import ConfigError
from ..manifest import ModelManifest
from .measure import AREA, ML, MM2, MM3_PER_ML, VOLUME

__all__ = ["EJECTION_FRACTION", "cine_output", "end_phases"]

PERCENT = Code("%", "UCUM", "percent")
EJECTION_FRACTION = Code("10230-1", "LN", "Left ventricular Ejection fraction")
FRACTIONAL_AREA_CHANGE = Code("FAC", "99DAIN", "Fractional area change")


def end_phases(cavity_pixels: npt.NDArray[np.int64]) -> tuple[int, int]:
    """(end-diastole, end-systole): the phases of the largest and the smallest total
    cavity, from pixels per (position, phase); the first of equals."""
    total = cavity_pixels.sum(axis=0)
    return int(np.argmax(total)), int(np.argmin(total))


def _label(manifest: ModelManifest, key: str, default: int | None) -> OutputLabel | None:
    value = manifest.postprocess.get(key, default)
    if value is None:
        return None
    found = [label for label in manifest.labels if label.value == value]
    if not found:
        raise ConfigError(f"model {manifest.name}: postprocess.{key} = {value} names no label")
    return found[0]


def cine_output(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8], volume: Volume
) -> ModelOutput:
    """The model output of a cine label map: end-diastole and end-systole, measured.

    Parameters
    ----------
    manifest:
        ``postprocess.cavity_label`` and ``myocardium_label`` say which labels are which.
    label_map:
        (positions x phases, rows, columns) uint8 in the volume's order (each position's
        phases in time order); rewritten in place to hold only the reported phases.
    volume:
        Gives ``phases`` and the spacing.

    Returns
    -------
    ModelOutput
        The end-diastolic cavity (and myocardium) and end-systolic cavity labels with
        their measurements; no label when no cavity was found on any frame.
    """
    cavity = _label(manifest, "cavity_label", 1)
    assert cavity is not None
    myocardium = _label(manifest, "myocardium_label", None)
    phases = volume.phases
    positions = label_map.shape[0] // phases
    frames = label_map.reshape(positions, phases, *label_map.shape[1:])
    pixels = (frames == cavity.value).sum(axis=(2, 3)).astype(np.int64)
    diastole, systole = end_phases(pixels)
    kept = frames[:, [diastole, systole]].copy()
    label_map[:] = 0
    if not pixels.any():
        return ModelOutput(labels=(), label_map=label_map)
    systolic = dataclasses.replace(
        cavity,
        value=max(label.value for label in manifest.labels) + 1,
        name=f"{cavity.name}, end-systole",
    )
    out = frames  # a view of label_map
    out[:, diastole][kept[:, 0] == cavity.value] = cavity.value
    out[:, systole][kept[:, 1] == cavity.value] = systolic.value
    labels = [dataclasses.replace(cavity, name=f"{cavity.name}, end-diastole")]
    if myocardium is not None:
        out[:, diastole][kept[:, 0] == myocardium.value] = myocardium.value
        labels.append(dataclasses.replace(myocardium, name=f"{myocardium.name}, end-diastole"))
    labels.append(systolic)
    slice_mm, row_mm, column_mm = volume.spacing_mm
    areas = pixels.sum(axis=0) * row_mm * column_mm
    eda, esa = float(areas[diastole]), float(areas[systole])
    wall = (
        float(np.count_nonzero(kept[:, 0] == myocardium.value)) * row_mm * column_mm
        if myocardium is not None
        else 0.0
    )
    if positions > 1:
        edv, esv = (a * slice_mm / MM3_PER_ML for a in (eda, esa))
        fraction = round(100 * (edv - esv) / edv, 1)
        measurements = [
            Measurement(cavity.value, VOLUME, edv, ML),
            Measurement(systolic.value, VOLUME, esv, ML),
            Measurement(systolic.value, EJECTION_FRACTION, fraction, PERCENT),
        ]
        if myocardium is not None:
            wall_ml = wall * slice_mm / MM3_PER_ML
            measurements.insert(1, Measurement(myocardium.value, VOLUME, wall_ml, ML))
    else:
        measurements = [
            Measurement(cavity.value, AREA, eda, MM2),
            Measurement(systolic.value, AREA, esa, MM2),
            Measurement(
                systolic.value, FRACTIONAL_AREA_CHANGE, round(100 * (eda - esa) / eda, 1), PERCENT
            ),
        ]
        if myocardium is not None:
            measurements.insert(1, Measurement(myocardium.value, AREA, wall, MM2))
    return ModelOutput(labels=tuple(labels), label_map=label_map, measurements=tuple(measurements))
