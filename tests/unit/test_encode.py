"""Unit tests of the encode stage: SEG and TID 1500 SR from a phantom's labels, read back."""

from __future__ import annotations

import time
from dataclasses import replace

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import (
    Code,
    Measurement,
    ModelOutput,
    OutputLabel,
    QualityIssue,
)
from dicom_ai_node.encode import (
    device_uid,
    encode_results,
    result_uid,
    to_bytes,
    tracking_uid,
    validate_roundtrip,
)
from dicom_ai_node.encode.sr import outer_contour
from dicom_ai_node.errors import EncodeError
from dicom_ai_node.infer.findings.measure import ML, VOLUME
from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.series import make_ct_series, phantom_to_datasets

from .encode_cases import ALGORITHM, LABELS, WHEN, volumes

SEG_UID, SR_UID = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def series() -> tuple[ChestPhantom, list[Dataset]]:
    return make_ct_series(30, 128, 128, spacing_mm=(5.0, 2.8, 2.8))


@pytest.fixture(scope="module")
def output(series: tuple[ChestPhantom, list[Dataset]]) -> ModelOutput:
    phantom = series[0]
    assert all(np.any(phantom.labels == label.value) for label in LABELS)
    return ModelOutput(
        labels=LABELS,
        label_map=phantom.labels,
        measurements=volumes(phantom.labels, phantom.spacing_mm),
    )


@pytest.fixture(scope="module")
def results(series: tuple[ChestPhantom, list[Dataset]], output: ModelOutput) -> list[Dataset]:
    return encode_results(series[1], output, ALGORITHM, "job-1", content_datetime=WHEN)


def read_back(ds: Dataset) -> Dataset:
    return validate_roundtrip(ds)


def test_seg_and_sr_only_without_findings(results: list[Dataset]) -> None:
    assert [ds.SOPClassUID for ds in results] == [SEG_UID, SR_UID]
    assert [ds.SeriesNumber for ds in results] == [9001, 9002]
    assert [ds.SeriesDescription for ds in results] == [
        "AI ct-chest-lungs 1.0.0 SEG",
        "AI ct-chest-lungs 1.0.0 SR",
    ]


def test_same_job_key_gives_identical_objects(
    series: tuple[ChestPhantom, list[Dataset]], output: ModelOutput, results: list[Dataset]
) -> None:
    again = encode_results(series[1], output, ALGORITHM, "job-1", content_datetime=WHEN)
    for first, second in zip(results, again, strict=True):
        assert first.SOPInstanceUID == second.SOPInstanceUID
        assert first.SeriesInstanceUID == second.SeriesInstanceUID
        assert to_bytes(first) == to_bytes(second)


def test_other_job_key_gives_other_uids(
    series: tuple[ChestPhantom, list[Dataset]], output: ModelOutput, results: list[Dataset]
) -> None:
    other = encode_results(series[1], output, ALGORITHM, "job-2", content_datetime=WHEN)
    uids = {ds.SOPInstanceUID for ds in results} | {ds.SeriesInstanceUID for ds in results}
    assert not uids & ({ds.SOPInstanceUID for ds in other} | {ds.SeriesInstanceUID for ds in other})
    assert len(uids) == 4


def test_uid_helpers_are_deterministic_and_valid() -> None:
    assert result_uid("a", "b") == result_uid("a", "b") != result_uid("ab")
    assert result_uid("ab", "c") != result_uid("a", "bc")  # no concatenation collisions
    assert device_uid("m", "1") == device_uid("m", "1") != device_uid("m", "2")
    for uid in (result_uid("x" * 500, "seg"), device_uid("m", "1"), tracking_uid("j", 1)):
        assert len(uid) <= 64 and pydicom.uid.UID(uid).is_valid
    with pytest.raises(ValueError):
        result_uid("")


def test_results_join_the_source_study(
    series: tuple[ChestPhantom, list[Dataset]], results: list[Dataset]
) -> None:
    src = series[1][0]
    for ds in results:
        back = read_back(ds)
        assert back.StudyInstanceUID == src.StudyInstanceUID
        assert back.SeriesInstanceUID != src.SeriesInstanceUID
        assert (back.PatientID, back.PatientName, back.AccessionNumber) == (
            src.PatientID,
            src.PatientName,
            src.AccessionNumber,
        )
        assert back.ContentDate == "20260102" and back.ContentTime.startswith("030405")
        assert back.InstanceCreationDate == "20260102"
    assert results[0].FrameOfReferenceUID == src.FrameOfReferenceUID


def test_equipment_names_the_model(results: list[Dataset]) -> None:
    for ds in results:
        assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions) == (
            "dicom-ai-node",
            "ct-chest-lungs",
            "1.0.0",
        )
        assert ds.DeviceUID == ALGORITHM.device_uid
        items = [
            item
            for item in ds.ContributingEquipmentSequence
            if item.get("ManufacturerModelName") == "ct-chest-lungs"
        ]
        assert len(items) == 1
        purpose = items[0].PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")
        assert items[0].SoftwareVersions == "1.0.0"


def test_seg_segments_codes_and_colours(results: list[Dataset]) -> None:
    seg = hd.seg.Segmentation.from_dataset(read_back(results[0]))
    assert seg.SegmentationType == "BINARY"
    for number, label in enumerate(LABELS, start=1):
        item = seg.get_segment_description(number)
        assert item.segment_label == label.name
        assert item.segmented_property_category.value == label.category.value
        assert item.segmented_property_type.value == label.type.value
        assert item.algorithm_type.value == "AUTOMATIC"
        algorithm = item.algorithm_identification[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ct-chest-lungs", "1.0.0")
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
        assert item.tracking_uid == tracking_uid("job-1", label.value)
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(rgb, label.color_rgb, atol=1)


def test_seg_decodes_to_the_label_map(
    series: tuple[ChestPhantom, list[Dataset]], results: list[Dataset]
) -> None:
    phantom, datasets = series
    seg = hd.seg.Segmentation.from_dataset(read_back(results[0]))
    decoded = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in datasets],
        combine_segments=True,
    )
    assert decoded.shape == phantom.labels.shape
    assert np.array_equal(decoded, phantom.labels)
    for label in LABELS:
        assert np.count_nonzero(decoded == label.value) == np.count_nonzero(
            phantom.labels == label.value
        )
    occupied = sum(int(np.any(phantom.labels[k] == v)) for k in range(30) for v in (1, 2))
    assert seg.NumberOfFrames == occupied  # empty frames left out


def test_sr_groups_have_tracking_geometry_and_volume(
    series: tuple[ChestPhantom, list[Dataset]], output: ModelOutput, results: list[Dataset]
) -> None:
    phantom, datasets = series
    sr = hd.sr.Comprehensive3DSR.from_dataset(read_back(results[1]))
    root = sr.ConceptNameCodeSequence[0]
    assert (root.CodeValue, root.CodingSchemeDesignator) == ("126000", "DCM")
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Right lung", "Left lung"]
    for group, label, measurement in zip(groups, LABELS, output.measurements, strict=True):
        assert group.tracking_uid == tracking_uid("job-1", label.value)
        assert group.finding_type.value == label.type.value
        assert [site.value.value for site in group.finding_sites] == [label.type.value]
        [volume] = group.get_measurements()
        assert volume.name.value == "118565006" and volume.unit.value == "ml"
        assert volume.value == pytest.approx(measurement.value)
        assert group.roi.graphic_type.value == "POLYLINE"
        points = group.roi.value
        assert np.array_equal(points[0], points[-1]) and len(points) >= 5
        ref = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        k = [ds.SOPInstanceUID for ds in datasets].index(ref.ReferencedSOPInstanceUID)
        areas = (phantom.labels == label.value).sum(axis=(1, 2))
        assert areas[k] == areas.max()  # the slice where the label is largest
        assert ref.ReferencedSOPClassUID == datasets[k].SOPClassUID
        algorithm = [
            item
            for item in group[0].ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "111001"
        ]
        assert [item.TextValue for item in algorithm] == ["ct-chest-lungs"]


def test_quality_issues_and_empty_labels_go_to_a_separate_findings_sr(
    series: tuple[ChestPhantom, list[Dataset]], output: ModelOutput
) -> None:
    label_map = output.label_map
    assert label_map is not None
    without_left = np.where(label_map == 2, 0, label_map).astype(np.uint8)
    out = replace(
        output,
        label_map=without_left,
        measurements=volumes(without_left, series[0].spacing_mm),
        quality_issues=(QualityIssue("slice_thickness", "5 mm slices; trained on 2.5 mm", False),),
    )
    seg, sr, findings = encode_results(series[1], out, ALGORITHM, "job-3", content_datetime=WHEN)
    assert findings.SeriesNumber == 9003
    assert findings.SeriesDescription == "AI ct-chest-lungs 1.0.0 findings SR"
    assert hd.seg.Segmentation.from_dataset(seg).number_of_segments == 1
    measured = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    assert [g.tracking_identifier for g in measured.get_planar_roi_measurement_groups()] == [
        "Right lung"
    ]
    assert measured.get_image_measurement_groups() == []
    groups = hd.sr.Comprehensive3DSR.from_dataset(findings).content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        "Left lung",
        "slice_thickness: 5 mm slices; trained on 2.5 mm",
    ]
    assert groups[0].get_measurements()[0].value == pytest.approx(0.0)
    evaluations = {e.name.value: e.value.value for e in groups[1].get_qualitative_evaluations()}
    assert evaluations["130550"] == "111236"  # Imaging Series Quality: usable, below standard


def test_no_label_map_gives_findings_only(series: tuple[ChestPhantom, list[Dataset]]) -> None:
    out = ModelOutput(labels=LABELS, measurements=(Measurement(1, VOLUME, 12.5, ML),))
    [findings] = encode_results(series[1], out, ALGORITHM, "job-4", content_datetime=WHEN)
    assert findings.SeriesNumber == 9003
    assert encode_results(series[1], ModelOutput(labels=LABELS), ALGORITHM, "job-5") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label_map": np.zeros((29, 128, 128), np.uint8)}, "shape"),
        ({"label_map": np.full((30, 128, 128), 7, np.uint8)}, "values \\[7\\]"),
        ({"measurements": (Measurement(9, VOLUME, 1.0, ML),)}, "label values \\[9\\]"),
    ],
)
def test_inconsistent_output_is_an_encode_error(
    series: tuple[ChestPhantom, list[Dataset]],
    output: ModelOutput,
    change: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_results(series[1], replace(output, **change), ALGORITHM, "job-6")  # type: ignore[arg-type]


def test_validate_roundtrip_returns_the_parsed_copy(results: list[Dataset]) -> None:
    back = validate_roundtrip(results[1])
    assert back is not results[1]
    assert back.SOPInstanceUID == results[1].SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == SR_UID


def test_validate_roundtrip_rejects_what_cannot_be_written(results: list[Dataset]) -> None:
    no_uid = pydicom.dcmread(pydicom.filebase.DicomBytesIO(to_bytes(results[1])))
    del no_uid.SOPInstanceUID
    del no_uid.file_meta.MediaStorageSOPInstanceUID
    with pytest.raises(EncodeError, match="cannot encode"):
        validate_roundtrip(no_uid)
    bad_value = pydicom.dcmread(pydicom.filebase.DicomBytesIO(to_bytes(results[1])))
    bad_value["InstanceNumber"].VR = "US"
    bad_value["InstanceNumber"]._value = "one"  # bypass pydicom's assignment check
    with pytest.raises(EncodeError, match="cannot encode"):
        validate_roundtrip(bad_value)


def shoelace(points: npt.NDArray[np.float32]) -> float:
    x, y = points[:, 0].astype(float), points[:, 1].astype(float)
    return abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))) / 2


def test_outer_contour_of_a_pixel_and_a_square() -> None:
    mask = np.zeros((6, 6), bool)
    mask[2, 3] = True
    assert outer_contour(mask).tolist() == [[3, 2], [4, 2], [4, 3], [3, 3], [3, 2]]
    mask[1:5, 1:5] = True
    assert outer_contour(mask).tolist() == [[1, 1], [5, 1], [5, 5], [1, 5], [1, 1]]


def test_outer_contour_encloses_the_largest_component_exactly() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        yy, xx = np.mgrid[:64, :64]
        blob = (yy - 30) ** 2 / rng.uniform(50, 300) + (xx - 32) ** 2 / rng.uniform(50, 300) <= 1
        noise = rng.random((64, 64)) < 0.03  # small specks elsewhere, some touching by corner
        mask = blob | (noise & ~np.roll(blob, 3, axis=0))
        points = outer_contour(mask)
        assert np.array_equal(points[0], points[-1])
        assert shoelace(points) >= np.count_nonzero(blob)  # holes are inside the outline
    diagonal = np.eye(5, dtype=bool)  # 8-connected: one component
    assert shoelace(outer_contour(diagonal)) == 5


@pytest.mark.slow
def test_seg_of_300_slices_512_builds_in_seconds() -> None:
    shape = (300, 512, 512)
    labels = np.zeros(shape, np.uint8)
    labels[20:280, 100:400, 60:240] = 1
    labels[20:280, 100:400, 272:452] = 2
    phantom = ChestPhantom(np.zeros(shape, np.int16), labels, (2.5, 0.7, 0.7))
    datasets = phantom_to_datasets(phantom)
    out = ModelOutput(
        labels=LABELS, label_map=labels, measurements=volumes(labels, (2.5, 0.7, 0.7))
    )
    start = time.perf_counter()
    seg, _sr = encode_results(datasets, out, ALGORITHM, "job-big", content_datetime=WHEN)
    elapsed = time.perf_counter() - start
    assert seg.NumberOfFrames == 520
    assert elapsed < 15, f"encoding took {elapsed:.1f} s"


def test_a_lesion_group_names_its_site_and_derived_measurements(
    series: tuple[ChestPhantom, list[Dataset]],
) -> None:
    """A nodule reported on its own (infer/findings/lesions.py): its SR group has the lung around
    it as Finding Site and a mean HU with derivation Mean; the SEG has it as a segment."""
    phantom, datasets = series
    label_map = phantom.labels.copy()
    z, y, x = np.nonzero(label_map == 1)
    k = len(z) // 2
    label_map[z[k], y[k] - 1 : y[k] + 2, x[k] - 1 : x[k] + 2] = 3  # inside the right lung
    nodule = OutputLabel(
        3,
        "Nodule 1",
        Code("49755003", "SCT", "Morphologically abnormal structure"),
        Code("27925004", "SCT", "Nodule"),
        (255, 210, 0),
        finding_site=LABELS[0].type,
    )
    mean = Measurement(
        3,
        Code("112031", "DCM", "Attenuation Coefficient"),
        35.5,
        Code("[hnsf'U]", "UCUM", "Hounsfield unit"),
        derivation=Code("373098007", "SCT", "Mean"),
    )
    output = ModelOutput(
        labels=(*LABELS, nodule),
        label_map=label_map,
        measurements=(*volumes(label_map, phantom.spacing_mm), mean),
    )
    seg_ds, sr_ds = encode_results(datasets, output, ALGORITHM, "job-n", content_datetime=WHEN)
    seg = hd.seg.Segmentation.from_dataset(read_back(seg_ds))
    assert seg.get_segment_description(3).segment_label == "Nodule 1"
    sr = hd.sr.Comprehensive3DSR.from_dataset(read_back(sr_ds))
    groups = sr.content.get_planar_roi_measurement_groups()
    [group] = [g for g in groups if g.tracking_identifier == "Nodule 1"]
    assert group.finding_type.value == "27925004"
    assert [site.value.value for site in group.finding_sites] == ["3341006"]  # right lung
    [num] = group.get_measurements()
    assert (num.name.value, num.unit.value, num.value) == ("112031", "[hnsf'U]", 35.5)
    assert num.derivation is not None and num.derivation.value == "373098007"


def test_a_label_with_a_laterality_carries_it_in_the_seg_and_the_sr(
    series: tuple[ChestPhantom, list[Dataset]],
) -> None:
    """A paired structure coded without its side (as mr-brain-atrophy's hippocampi):
    the SEG qualifies the segment's type with the side (Segmented Property Type Modifier
    Code Sequence, PS3.3 C.8.20.2), the SR group's Finding Site has it (TID 1419)."""
    phantom, datasets = series
    right = Code("24028007", "SCT", "Right")
    hippocampus = Code("5366008", "SCT", "Hippocampus")
    labels = (
        replace(LABELS[0], name="Right hippocampus", type=hippocampus, laterality=right),
        LABELS[1],
    )
    output = ModelOutput(
        labels=labels,
        label_map=phantom.labels,
        measurements=volumes(phantom.labels, phantom.spacing_mm),
    )
    seg_ds, sr_ds = encode_results(datasets, output, ALGORITHM, "job-l", content_datetime=WHEN)
    seg = read_back(seg_ds)
    first, second = seg.SegmentSequence
    [modifier] = first.SegmentedPropertyTypeCodeSequence[
        0
    ].SegmentedPropertyTypeModifierCodeSequence
    assert (modifier.CodeValue, modifier.CodingSchemeDesignator) == ("24028007", "SCT")
    assert (
        "SegmentedPropertyTypeModifierCodeSequence"
        not in (second.SegmentedPropertyTypeCodeSequence[0])
    )
    sr = hd.sr.Comprehensive3DSR.from_dataset(read_back(sr_ds))
    groups = {g.tracking_identifier: g for g in sr.content.get_planar_roi_measurement_groups()}
    [site] = groups["Right hippocampus"].finding_sites
    assert site.value.value == "5366008"
    assert site.laterality is not None and site.laterality.value == "24028007"
    assert groups["Left lung"].finding_sites[0].laterality is None
