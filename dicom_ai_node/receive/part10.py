"""Receive: the PS3.10 head (preamble, "DICM", file meta) written before a received data set.

The same bytes pynetdicom's ``encode_file_meta(event.file_meta)`` writes, without building
and encoding a pydicom dataset for each instance (a noticeable share of a C-STORE's CPU).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

__all__ = ["file_head"]

_PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = b"\x02\x00\x01\x00OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01"


def _short(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """An explicit VR little endian element of group 0002 with a 2-byte length (PS3.5 7.1.2)."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def file_head(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for one received instance.

    Parameters
    ----------
    sop_class_uid, sop_instance_uid:
        The C-STORE's Affected SOP Class and Instance UIDs (Media Storage SOP Class and
        Instance UIDs); conformant UIDs (ASCII, at most 64 characters).
    transfer_syntax_uid:
        The presentation context's transfer syntax.
    """
    elements = b"".join(
        (
            _VERSION,
            _short(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\x00"),
            _short(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\x00"),
            _short(0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\x00"),
            _short(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode("ascii"), b"\x00"),
            _short(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "),
        )
    )
    group_length = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(elements))
    return _PREAMBLE + group_length + elements
