"""Receive: the fast attribute reads agree with pydicom's full read, in every transfer syntax."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset

from dicom_ai_node.receive.attrs import PARSE_ERRORS, read_instance, read_series
from dicom_ai_node.route.header import header_of
from dicom_ai_node.testing import CANARY_PATIENT_NAME, make_ct_series

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
FILES = [
    "MR_small_implicit.dcm",  # implicit VR little endian
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm",  # encapsulated
    "MR_small_RLE.dcm",
]


def body_and_syntax(path: Path) -> tuple[bytes, str]:
    """The data set bytes after the file meta (what a C-STORE carries) and its syntax."""
    with path.open("rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        return fp.read(), str(meta.TransferSyntaxUID)


@pytest.mark.parametrize("name", FILES)
def test_reads_agree_with_pydicom(name: str) -> None:
    body, syntax = body_and_syntax(TEST_FILES / name)
    ds = dcmread(TEST_FILES / name, stop_before_pixels=True)
    instance = read_instance(body, syntax)
    assert instance.sop_class_uid == ds.SOPClassUID
    assert instance.sop_instance_uid == ds.SOPInstanceUID
    assert instance.study_instance_uid == ds.StudyInstanceUID
    assert instance.series_instance_uid == ds.SeriesInstanceUID
    number = ds.get("InstanceNumber")
    assert instance.instance_number == (int(number) if number not in (None, "") else None)
    full, series = read_series(body, syntax)
    assert full == instance
    assert series.header == header_of(ds)
    assert series.patient_id == str(ds.get("PatientID", ""))
    assert series.modality == str(ds.get("Modality", ""))


def encoded(ds: Dataset) -> bytes:
    """The data set as explicit VR little endian, without file meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_generated_series_values() -> None:
    _, datasets = make_ct_series(2, 16, 16, seed=3)
    ds = datasets[1]
    body = encoded(ds)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    assert read_instance(body, syntax).instance_number == 2
    _, series = read_series(body, syntax)
    assert (series.patient_name, series.series_number, series.study_date) == (
        CANARY_PATIENT_NAME,
        2,
        "20260101",
    )
    assert series.header["BodyPartExamined"] == "CHEST"


def test_missing_values_read_as_empty() -> None:
    _, datasets = make_ct_series(1, 16, 16, seed=4)
    ds = datasets[0]
    del ds.StudyInstanceUID, ds.InstanceNumber
    instance = read_instance(encoded(ds), "1.2.840.10008.1.2.1")
    assert (instance.study_instance_uid, instance.instance_number) == ("", None)


@pytest.mark.parametrize(
    ("body", "syntax"),
    [
        (b"not deflated", "1.2.840.10008.1.2.1.99"),
        (b"", "1.2.3.4"),  # not a transfer syntax
    ],
)
def test_malformed_data_sets_raise_parse_errors(body: bytes, syntax: str) -> None:
    with pytest.raises(PARSE_ERRORS):
        read_series(body, syntax)
    with pytest.raises(PARSE_ERRORS):
        read_instance(body, syntax)
