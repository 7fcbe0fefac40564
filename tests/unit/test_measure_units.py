"""Units of the node's measurements (issue 14): volumes in ml (UCUM), exact in the SR's
NUMs (PS3.16 TID 300), rounded only in the text the node writes for people."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from dicom_ai_node.domain import Code, Measurement, ModelOutput, Volume
from dicom_ai_node.encode import device_uid, encode_results, to_bytes
from dicom_ai_node.infer.findings.measure import (
    AREA,
    HU,
    LONG_AXIS,
    ML,
    MM,
    MM2,
    NO_UNITS,
    VOLUME,
    format_measurement,
    format_value,
    label_measurements,
    ratio_measurements,
    volume_ml,
)
from dicom_ai_node.infer.install import Trial
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.series import make_ct_series

MODELS = Path(__file__).resolve().parents[2] / "models"
PERCENT = Code("%", "UCUM", "percent")


def _volume(spacing_mm: tuple[float, float, float], shape: tuple[int, int, int]) -> Volume:
    return Volume(np.zeros(shape, np.float32), spacing_mm, (), "", "", "")


def _sr_nums(sr: Dataset) -> dict[str, list[Dataset]]:
    """Per measurement group (Tracking Identifier, 112039): its NUM content items."""
    out: dict[str, list[Dataset]] = {}
    for group in sr.ContentSequence[-1].ContentSequence:
        items = group.ContentSequence
        name = next(
            i.TextValue for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112039"
        )
        out[name] = [i for i in items if i.ValueType == "NUM"]
    return out


def test_the_sr_reports_a_volume_in_ml_to_full_precision() -> None:
    """Voxels x voxel volume / 1000 in UCUM ml: the Floating Point Value is that double,
    the Numeric Value the closest DS of at most 16 characters (PS3.5 6.2)."""
    phantom, datasets = make_ct_series(12, 64, 64, spacing_mm=(1.5, 0.7, 0.7))
    volume, ordered, issues = load_volume(datasets)
    assert volume is not None and issues == ()
    manifest = load_manifest(MODELS / "ct_chest_lungs" / "model.toml")
    output = ModelOutput(
        labels=tuple(label for label in manifest.labels if not label.instances),
        label_map=phantom.labels,
        measurements=label_measurements(manifest, phantom.labels, volume),
    )
    algorithm = manifest.algorithm(device_uid(manifest.name, manifest.version))
    results = encode_results(
        ordered, output, algorithm, "units", content_datetime=dt.datetime(2026, 1, 2, 3, 4, 5)
    )
    [sr] = [ds for ds in results if ds.Modality == "SR"]
    nums = _sr_nums(pydicom.dcmread(io.BytesIO(to_bytes(sr))))
    for label in output.labels:
        [num] = [
            n for n in nums[label.name] if n.ConceptNameCodeSequence[0].CodeValue == "118565006"
        ]
        value = num.MeasuredValueSequence[0]
        unit = value.MeasurementUnitsCodeSequence[0]
        assert (unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning) == (
            "ml",
            "UCUM",
            "milliliter",
        )
        voxels = int(np.count_nonzero(phantom.labels == label.value))
        exact = voxels * float(np.prod(volume.spacing_mm)) / 1000
        assert exact == pytest.approx(voxels * 1.5 * 0.7 * 0.7 / 1000, rel=1e-12)
        assert value.FloatingPointValue == exact
        assert str(value.NumericValue) == format_number_as_ds(exact)
        assert float(value.NumericValue) == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize(
    "value",
    [
        2220.70458,  # a lung
        0.065,  # a small nodule
        volume_ml(123457, _volume((1.5, 0.7, 0.7), (1, 1, 1))),  # as many digits as a double
        1 / 3,
        98765.4321098765,
        -823.4567890123456,  # a mean density, HU
        0.0,
        1e-9,
        5e-324,
        1.234567890123456e300,
    ],
)
def test_highdicom_writes_the_closest_ds_that_fits_and_never_fails(value: float) -> None:
    """highdicom formats a NUM's value with pydicom's ``auto_format``: at most 16
    characters (PS3.5 6.2, DS), as many digits as fit, and the double beside it."""
    item = hd.sr.NumContentItem(
        name=hd.sr.CodedConcept("118565006", "SCT", "Volume"),
        value=value,
        unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
    )
    measured = item.MeasuredValueSequence[0]
    text = str(measured.NumericValue)
    assert len(text) <= 16 and text == format_number_as_ds(value)
    assert measured.FloatingPointValue == value
    digits = 13 if 1e-3 <= abs(value) < 1e6 else 9
    assert float(text) == pytest.approx(value, rel=10**-digits, abs=1e-320)


def test_a_ratio_of_volumes_is_the_ratio_of_the_reported_volumes() -> None:
    """The ventricle-to-brain ratio and hippocampal occupancy (voxel counts) are the
    ratios of the volumes the SR reports in ml: the unit cancels out."""
    manifest = load_manifest(MODELS / "mr_brain_atrophy" / "model.toml")
    label_map = np.random.default_rng(7).integers(0, 7, (6, 32, 32)).astype(np.uint8)
    volume = _volume((1.2, 0.9375, 0.9375), label_map.shape)
    volumes = label_measurements(manifest, label_map, volume)
    assert volumes and all(m.concept == VOLUME and m.unit == ML for m in volumes)
    ml = {m.label_value: m.value for m in volumes}
    found = ratio_measurements(manifest, label_map)
    ratios = {m.label_value: m for m in found if m.concept.value in {"VBR", "HOC"}}
    assert sorted(ratios) == [2, 3, 4]
    for spec in manifest.postprocess["ratios"]:
        up = sum(ml[v] for v in spec["numerator"])
        down = sum(ml[v] for v in spec["denominator"])
        assert ratios[spec["label"]].value == pytest.approx(up / down, abs=5e-6)  # 5 decimals


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (2220.70458, ML, "2220.7 ml"),  # an organ: 0.1 ml
        (10.04, ML, "10.0 ml"),
        (4.8213, ML, "4.82 ml"),  # under 10 ml: 3 significant digits
        (0.065, ML, "0.065 ml"),  # a 65 mm3 nodule
        (0.0649, ML, "0.0649 ml"),
        (12.345, MM, "12.3 mm"),  # lengths: 0.1 mm
        (123.456, MM2, "123.5 mm2"),
        (35.4, HU, "35 HU"),  # mean density: whole HU
        (-823.6, HU, "-824 HU"),
        (62.345, PERCENT, "62.3 %"),
        (0.86213, NO_UNITS, "0.862"),  # ratios, probabilities: 3 significant digits
        (3.0, NO_UNITS, "3"),  # a grade, a count
        (1234.0, NO_UNITS, "1234"),
        (0.0, NO_UNITS, "0"),
    ],
)
def test_text_for_people_is_rounded_as_a_reader_reads_it(
    value: float, unit: Code, text: str
) -> None:
    assert format_value(value, unit) == text


def test_models_add_prints_volumes_in_ml_rounded() -> None:
    manifest = load_manifest(MODELS / "ct_chest_lungs" / "model.toml")
    output = ModelOutput(
        labels=manifest.labels,
        measurements=(
            Measurement(1, VOLUME, 2220704.58 / 1000, ML),
            Measurement(3, LONG_AXIS, 5.6789, MM),
            Measurement(3, VOLUME, 0.065, ML),
            Measurement(3, AREA, 20.04, MM2),
        ),
    )
    trial = Trial(manifest, 0.1, 0.2, (16, 128, 128), {}, output)
    assert trial.lines()[-4:] == [
        "measurement: label 1 Volume = 2220.7 ml",
        "measurement: label 3 Long Axis = 5.7 mm",
        "measurement: label 3 Volume = 0.065 ml",
        "measurement: label 3 Area = 20.0 mm2",
    ]
    assert format_measurement(output.measurements[0]) == "Volume = 2220.7 ml"
