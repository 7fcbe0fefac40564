"""header_of and series_info on pydicom's bundled files and on synthetic series."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_ai_node.domain import Code
from dicom_ai_node.route.header import MAX_VALUE_BYTES, header_of, series_info
from dicom_ai_node.testing.series import make_ct_series

# Files shipped inside the pydicom wheel (no download).
BUNDLED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "rtstruct.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
    "badVR.dcm",
    "UN_sequence.dcm",
    "priv_SQ.dcm",
    "nested_priv_SQ.dcm",
    "reportsi_with_empty_number_tags.dcm",
    "examples_overlay.dcm",
    "SC_rgb_small_odd.dcm",
]


def read(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path, force=True)


@pytest.mark.parametrize("name", BUNDLED)
def test_header_never_raises_and_is_json(name: str) -> None:
    header = header_of(read(name))
    json.dumps(header, allow_nan=False)
    assert "PixelData" not in header
    for key, value in header.items():
        assert isinstance(value, str | int | float | list), key
        assert len(str(value)) <= MAX_VALUE_BYTES


def test_ct_small_values() -> None:
    header = header_of(read("CT_small.dcm"))
    assert header["Modality"] == "CT"
    assert header["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert header["SliceThickness"] == 5.0
    assert header["SeriesNumber"] == 1
    assert isinstance(header["PatientName"], str)
    assert "OtherPatientIDsSequence" not in header  # sequences are left out
    info = series_info(header, number_of_instances=1, sop_class_uids=[])
    assert info.sop_class_uids == {"1.2.840.10008.5.1.4.1.1.2"}  # from the header
    assert info.slice_thickness == 5.0
    assert info.pixel_spacing is not None
    assert info.is_axial


def test_rtstruct_series_info() -> None:
    info = series_info(header_of(read("rtstruct.dcm")), number_of_instances=1, sop_class_uids=[])
    assert info.modality == "RTSTRUCT"
    assert info.image_orientation_patient is None
    assert info.is_axial is None


def test_anatomic_region_sequence_becomes_codes() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    item = Dataset()
    item.CodeValue = "816094009"
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = "Thorax"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    header = header_of(ds)
    assert header["AnatomicRegionSequence"] == [["816094009", "SCT", "Thorax"]]
    assert "OtherPatientIDsSequence" not in header
    info = series_info(header, number_of_instances=1, sop_class_uids=["1.2"])
    assert info.anatomic_region_codes == (Code("816094009", "SCT", "Thorax"),)


def test_bulk_long_and_empty_values_are_left_out() -> None:
    ds = Dataset()
    ds.SeriesDescription = ""
    ds.ImageComments = "x" * (MAX_VALUE_BYTES + 1)
    ds.add_new(0x00091010, "LO", "private")
    ds.add_new(0x00282000, "OB", b"\x00" * 10)  # ICCProfile
    ds.PatientName = "DOE^JANE"
    header = header_of(ds)
    assert header == {"PatientName": "DOE^JANE"}


def test_enhanced_multiframe_takes_number_of_frames() -> None:
    header = {"Modality": "CT", "NumberOfFrames": 300, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2.1"}
    info = series_info(header, number_of_instances=1, sop_class_uids=[])
    assert info.number_of_slices == 300
    assert info.slice_thickness is None and info.pixel_spacing is None


def test_malformed_values_become_defaults() -> None:
    header = {"SliceThickness": "abc", "PixelSpacing": [0.5], "NumberOfFrames": "x"}
    info = series_info(
        header, number_of_instances=2, sop_class_uids=["1.2"], calling_ae_title=" A "
    )
    assert info.slice_thickness is None
    assert info.pixel_spacing is None
    assert info.number_of_frames == 1
    assert info.calling_ae_title == "A"


def test_synthetic_ct_series() -> None:
    _, datasets = make_ct_series(slices=4, rows=32, columns=32)
    header = header_of(datasets[0])
    info = series_info(
        header,
        number_of_instances=len(datasets),
        sop_class_uids={ds.SOPClassUID for ds in datasets},
        calling_ae_title="SCANNER1",
    )
    assert info.modality == "CT"
    assert info.body_part_examined == "CHEST"
    assert info.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert info.slice_thickness == 2.5
    assert info.pixel_spacing == (1.4, 1.4)
    assert info.is_axial
    assert info.number_of_slices == 4
    assert info.header["SeriesNumber"] == 2
