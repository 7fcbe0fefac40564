"""Encode: prove a result object survives encoding to bytes before anyone sends it."""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from ..errors import EncodeError

__all__ = ["to_bytes", "validate_roundtrip"]


def to_bytes(ds: Dataset) -> bytes:
    """Encode ``ds`` as a DICOM file (PS3.10: preamble, File Meta, data set).

    Raises
    ------
    EncodeError
        If pydicom cannot encode it.
    """
    buffer = BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:  # pydicom raises many kinds; all mean "not encodable"
        raise EncodeError(f"cannot encode {_name(ds)}: {exc}") from exc
    return buffer.getvalue()


def validate_roundtrip(ds: Dataset) -> Dataset:
    """Write ``ds`` to bytes, read it back and check its identity survived (PS3.10 7.1).

    Parameters
    ----------
    ds:
        A result object with file meta (highdicom sets it).

    Returns
    -------
    pydicom.Dataset
        The dataset read back from the bytes, fully parsed.

    Raises
    ------
    EncodeError
        If it cannot be written or read, or SOP Class/Instance UID or the File Meta
        Media Storage UIDs differ after the round trip.
    """
    data = to_bytes(ds)
    try:
        back = dcmread(BytesIO(data))
        for element in back.iterall():  # parse every element now, not lazily later
            _ = element.value
    except Exception as exc:  # anything pydicom cannot read back is a bad object
        raise EncodeError(f"cannot read back {_name(ds)}: {exc}") from exc
    pairs = {
        "SOPClassUID": (ds.get("SOPClassUID"), back.get("SOPClassUID")),
        "SOPInstanceUID": (ds.get("SOPInstanceUID"), back.get("SOPInstanceUID")),
        "MediaStorageSOPClassUID": (
            ds.get("SOPClassUID"),
            back.file_meta.get("MediaStorageSOPClassUID"),
        ),
        "MediaStorageSOPInstanceUID": (
            ds.get("SOPInstanceUID"),
            back.file_meta.get("MediaStorageSOPInstanceUID"),
        ),
    }
    for keyword, (before, after) in pairs.items():
        if not before or str(before) != str(after):
            raise EncodeError(f"{keyword} changed in the round trip: {before!r} -> {after!r}")
    return back


def _name(ds: Dataset) -> str:
    return f"{ds.get('Modality', '?')} {ds.get('SOPInstanceUID', '(no SOP Instance UID)')}"
