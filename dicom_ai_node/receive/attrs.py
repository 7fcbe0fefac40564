"""Receive: the attributes the index needs, read from a received data set as encoded.

Two reads, so that the common case stays cheap:

* :func:`read_series` decodes the whole top level (pixel data excluded) once per series:
  patient, study and series attributes plus the header the routing rules match on;
* :func:`read_instance` reads only the five instance-level values every C-STORE needs
  (PS3.4 B.2.3 and the index), stopping before group 0028 and leaving values undecoded.

Both take the data set bytes as sent (no file meta) and the transfer syntax of the
presentation context (PS3.5 10); a deflated data set is inflated first.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..route.header import header_of
from ..store.index import InstanceRecord, SeriesAttrs

__all__ = [
    "PARSE_ERRORS",
    "InstanceAttrs",
    "SeriesAttrs",
    "instance_record",
    "read_instance",
    "read_series",
]

#: What reading a malformed data set can raise; the SCP answers these with 0xC000-class.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError,
    ValueError,  # includes UnicodeDecodeError
    EOFError,
    OSError,
    AttributeError,
    KeyError,
    TypeError,
    IndexError,
    NotImplementedError,
    struct.error,
    zlib.error,
)

_SOP_CLASS = Tag(0x0008, 0x0016)
_SOP_INSTANCE = Tag(0x0008, 0x0018)
_STUDY = Tag(0x0020, 0x000D)
_SERIES = Tag(0x0020, 0x000E)
_INSTANCE_NUMBER = Tag(0x0020, 0x0013)
_INSTANCE_TAGS: list[BaseTag | int] = [_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES, _INSTANCE_NUMBER]
_LAST_INSTANCE_TAG = 0x00200013  # (0020,0013) Instance Number: the last one read_instance needs
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class InstanceAttrs:
    """The instance-level values of one C-STORE data set (empty text when absent)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None


def _dataset(
    body: bytes, transfer_syntax: str, stop_when: Any, specific_tags: list[BaseTag | int] | None
) -> Dataset:
    uid = UID(transfer_syntax)
    if uid == DeflatedExplicitVRLittleEndian:  # PS3.5 A.5: raw deflate of the data set
        body = zlib.decompress(body, -zlib.MAX_WBITS)
    return read_dataset(
        io.BytesIO(body),  # shares the bytes object, no copy
        uid.is_implicit_VR,
        uid.is_little_endian,
        stop_when=stop_when,
        specific_tags=specific_tags,
    )


def _raw_text(ds: Dataset, tag: BaseTag) -> str:
    """A text value (UI, IS) as stored, without pydicom's conversion."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \0")
    return "" if value is None else str(value).strip(" \0")


def _number(text: str) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _after_instance_tags(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return int(tag) > _LAST_INSTANCE_TAG


def _before_pixels(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return int(tag) >= _PIXEL_DATA


def _instance_of(ds: Dataset) -> InstanceAttrs:
    return InstanceAttrs(
        sop_class_uid=_raw_text(ds, _SOP_CLASS),
        sop_instance_uid=_raw_text(ds, _SOP_INSTANCE),
        study_instance_uid=_raw_text(ds, _STUDY),
        series_instance_uid=_raw_text(ds, _SERIES),
        instance_number=_number(_raw_text(ds, _INSTANCE_NUMBER)),
    )


def read_instance(body: bytes, transfer_syntax: str) -> InstanceAttrs:
    """The instance-level values, reading only up to (0020,0013) Instance Number.

    Raises
    ------
    Exception
        One of :data:`PARSE_ERRORS` for a data set that cannot be read.
    """
    return _instance_of(_dataset(body, transfer_syntax, _after_instance_tags, _INSTANCE_TAGS))


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword, "")
    return str(value if value is not None else "")[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def read_series(body: bytes, transfer_syntax: str) -> tuple[InstanceAttrs, SeriesAttrs]:
    """Instance and series values plus the routing header, from the whole top level.

    Raises
    ------
    Exception
        One of :data:`PARSE_ERRORS` for a data set that cannot be read.
    """
    ds = _dataset(body, transfer_syntax, _before_pixels, None)
    series = SeriesAttrs(
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName", 324),
        study_date=_text(ds, "StudyDate", 8),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber", 16),
        modality=_text(ds, "Modality", 16),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        expected_count=_int(ds, "NumberOfSeriesRelatedInstances"),
        header=header_of(ds),
    )
    return _instance_of(ds), series


def instance_record(
    instance: InstanceAttrs,
    series: SeriesAttrs,
    *,
    transfer_syntax_uid: str,
    path: str,
    size: int,
    sha256: str,
    received_at: dt.datetime,
    calling_ae_title: str,
) -> InstanceRecord:
    """What the index keeps of a stored instance: its values plus where and how it came."""
    return InstanceRecord(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        study_instance_uid=instance.study_instance_uid,
        series_instance_uid=instance.series_instance_uid,
        path=path,
        size=size,
        sha256=sha256,
        received_at=received_at,
        calling_ae_title=calling_ae_title,
        instance_number=instance.instance_number,
        series=series,
    )
