"""Receive: the fast attribute reads agree with pydicom's full read, in every transfer syntax."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset

from dicom_ai_node.receive.attrs import (
    MAX_SEQUENCE_DEPTH,
    PARSE_ERRORS,
    TooDeeplyNested,
    check_sequence,
    inflated_size_within,
    read_instance,
    read_series,
)
from dicom_ai_node.route.header import header_of
from dicom_ai_node.testing.series import CANARY_PATIENT_NAME, make_ct_series

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


def _sequences(levels: int, syntax: str, undefined: bool) -> bytes:
    """``levels`` Referenced Series Sequences (0008,1115), each the one item of the last."""
    little, implicit = syntax != BIG_ENDIAN, syntax == IMPLICIT
    order = "<" if little else ">"
    value = b""
    for _ in range(levels):
        item_length = 0xFFFFFFFF if undefined else len(value)
        item = struct.pack(order + "HHI", 0xFFFE, 0xE000, item_length) + value
        if undefined:
            item += struct.pack(order + "HHI", 0xFFFE, 0xE00D, 0)
            item += struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0)
        length = 0xFFFFFFFF if undefined else len(item)
        if implicit:
            value = struct.pack(order + "HHI", 0x0008, 0x1115, length) + item
        else:
            value = struct.pack(order + "HH2s2xI", 0x0008, 0x1115, b"SQ", length) + item
    return value


def _with_sequences(levels: int, syntax: str, undefined: bool) -> bytes:
    """A CT data set with :func:`_sequences` in its place, before the study and series UIDs."""
    _, datasets = make_ct_series(1, 8, 8, seed=5)
    ds = datasets[0]
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = syntax != BIG_ENDIAN, syntax == IMPLICIT
    write_dataset(buffer, ds[:0x00081115])
    head = buffer.getvalue()
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = syntax != BIG_ENDIAN, syntax == IMPLICIT
    write_dataset(buffer, ds[0x00081116:])
    return head + _sequences(levels, syntax, undefined) + buffer.getvalue()


IMPLICIT, EXPLICIT, BIG_ENDIAN = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"


@pytest.mark.parametrize("undefined", [True, False])
@pytest.mark.parametrize("syntax", [IMPLICIT, EXPLICIT, BIG_ENDIAN])
def test_nesting_beyond_the_bound_is_refused(undefined: bool, syntax: str) -> None:
    """PS3.5 7.5: MAX_SEQUENCE_DEPTH levels are read; one more is refused before pydicom."""
    fine = _with_sequences(MAX_SEQUENCE_DEPTH, syntax, undefined)
    assert read_series(fine, syntax)[0] == read_instance(fine, syntax)
    assert read_instance(fine, syntax).sop_instance_uid
    deep = _with_sequences(MAX_SEQUENCE_DEPTH + 1, syntax, undefined)
    with pytest.raises(TooDeeplyNested):
        read_series(deep, syntax)
    if undefined:  # read_instance skips a sequence of defined length without reading it
        with pytest.raises(TooDeeplyNested):
            read_instance(deep, syntax)
    else:
        assert read_instance(deep, syntax) == read_instance(fine, syntax)


def test_a_deep_undefined_length_un_sequence_is_walked_as_implicit_vr() -> None:
    """A UN value of undefined length is a sequence in implicit VR (PS3.5 6.2.2)."""
    level = struct.pack("<HHI", 0x0009, 0x1010, 0xFFFFFFFF)  # private, implicit inside
    level += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    value = level * (MAX_SEQUENCE_DEPTH + 1) + close * (MAX_SEQUENCE_DEPTH + 1)
    un = struct.pack("<HH2s2xI", 0x0009, 0x1010, b"UN", 0xFFFFFFFF) + value[8:]
    with pytest.raises(TooDeeplyNested):
        check_sequence(un, 12, 0xFFFFFFFF, True, True)
    check_sequence(un, 12, 0xFFFFFFFF, True, True, limit=MAX_SEQUENCE_DEPTH + 1)


def test_a_deflated_data_set_is_measured_without_keeping_it() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflater.compress(bytes(64 * 1024 * 1024)) + deflater.flush()
    assert len(bomb) < 100_000
    assert inflated_size_within(bomb, 64 * 1024 * 1024)
    assert not inflated_size_within(bomb, 64 * 1024 * 1024 - 1)
