"""Receive: the attributes the index needs, read from a received data set as encoded.

Two reads, so that the common case stays cheap:

* :func:`read_series` decodes the whole top level (pixel data excluded) once per series:
  patient, study and series attributes plus the header the routing rules match on;
* :func:`read_instance` reads only the five instance-level values every C-STORE needs
  (PS3.4 B.2.3 and the index), stopping before group 0028 and leaving values undecoded.

Both take the data set bytes as sent (no file meta) and the transfer syntax of the
presentation context (PS3.5 10); a deflated data set is inflated first (at most
:data:`MAX_INFLATED_HEADER` bytes of it). pydicom reads nested sequences recursively:
each sequence it would read is walked first, iteratively, and refused when more than
:data:`MAX_SEQUENCE_DEPTH` levels nest.
"""

from __future__ import annotations

import io
import struct
import zlib

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..route.header import header_of
from ..store.index import SeriesAttrs
from ..store.ingest import InstanceAttrs

__all__ = [
    "MAX_INFLATED_HEADER",
    "MAX_SEQUENCE_DEPTH",
    "PARSE_ERRORS",
    "TooDeeplyNested",
    "check_sequence",
    "inflated_size_within",
    "read_instance",
    "read_series",
]

#: Deepest nesting of sequences accepted (PS3.5 7.5). Real objects nest a few levels
#: (a TID 1500 SR content tree about eight); pydicom spends about five stack frames
#: a level, so 64 levels stay far from Python's recursion limit in any thread.
MAX_SEQUENCE_DEPTH = 64
#: Most bytes inflated from a deflated data set (PS3.5 A.5) to read its header: a
#: deflated data set of a few MB can claim gigabytes.
MAX_INFLATED_HEADER = 64 * 1024 * 1024


class TooDeeplyNested(ValueError):
    """Sequences nested deeper than :data:`MAX_SEQUENCE_DEPTH` (answered ``0xC000``)."""


#: What reading a malformed data set can raise; the SCP answers these with 0xC000-class.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError,
    ValueError,  # includes UnicodeDecodeError and TooDeeplyNested
    RecursionError,  # nesting that the walk did not see (it stops at malformed lengths)
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


_UNDEFINED = 0xFFFFFFFF
#: Explicit VRs with a reserved field and a 4-byte length (PS3.5 7.1.2, Table 7.1-1).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: how a sequence value starts


def _skip_undefined(body: bytes, pos: int, little: bool) -> int:
    """The offset after the Sequence Delimitation Item ending an undefined-length value."""
    delimiter = b"\xfe\xff\xdd\xe0" if little else b"\xff\xfe\xe0\xdd"
    found = body.find(delimiter, pos)
    return len(body) if found < 0 else found + 8


def check_sequence(
    body: bytes,
    start: int,
    length: int,
    implicit: bool,
    little: bool,
    limit: int = MAX_SEQUENCE_DEPTH,
) -> None:
    """Refuse a sequence value in which more than ``limit`` sequences nest (itself included).

    An iterative walk over the element headers of the value starting at ``start``
    (PS3.5 7.1, 7.5): values are skipped by their length, never decoded, so the cost is
    about a microsecond per element whatever the depth. It ends where the sequence does
    (its length, or its Sequence Delimitation Item) and at a length running past the
    data set, leaving a malformed value to pydicom.

    Raises
    ------
    TooDeeplyNested
        When more than ``limit`` sequences are open at once.
    """
    order = "<" if little else ">"
    short, long_ = struct.Struct(order + "HH2sH"), struct.Struct(order + "HH2s2xI")
    head = struct.Struct(order + "HHI")
    end = len(body)
    # open sequences and items: (end offset, -1 for undefined length; is a sequence;
    # implicit VR inside); a UN sequence of undefined length is implicit VR (PS3.5 6.2.2)
    opened = [(-1 if length == _UNDEFINED else start + length, True, implicit)]
    pos, depth = start, 1
    while opened and pos + 8 <= end:
        group, element, length = head.unpack_from(body, pos)
        inner_implicit = opened[-1][2]
        if group == 0xFFFE:  # item (E000), item or sequence delimitation: no VR
            pos += 8
            if element == 0xE000:
                opened.append((-1 if length == _UNDEFINED else pos + length, False, inner_implicit))
            elif opened[-1][0] < 0:
                depth -= opened.pop()[1]
        elif inner_implicit:
            pos += 8
            if body[pos : pos + 4] == _ITEM:  # pydicom's look-ahead for unknown tags
                depth += 1
                opened.append((-1 if length == _UNDEFINED else pos + length, True, True))
            else:
                pos = _skip_undefined(body, pos, little) if length == _UNDEFINED else pos + length
        else:
            _, _, vr, length = short.unpack_from(body, pos)
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    return
                length = long_.unpack_from(body, pos)[3]
                pos += 12
            else:
                pos += 8
            if vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED):
                depth += 1
                opened.append((-1 if length == _UNDEFINED else pos + length, True, vr == b"UN"))
            else:  # a value; of undefined length: encapsulated pixel data, not elements
                pos = _skip_undefined(body, pos, little) if length == _UNDEFINED else pos + length
        if depth > limit:
            raise TooDeeplyNested(f"sequences nested deeper than {limit} levels")
        while opened and 0 <= opened[-1][0] <= pos:  # the items and sequences that ended
            depth -= opened.pop()[1]


def _read_as_sequence(vr: str | None, length: int, body: bytes, fp: io.BytesIO) -> bool:
    """Whether pydicom may read the element whose value starts at ``fp`` as a sequence.

    ``vr`` is None when the data set is read as implicit VR; a UN value of undefined
    length is a sequence (PS3.5 6.2.2); otherwise pydicom looks for an item tag.
    """
    if length == 0:
        return False
    if vr == "SQ":
        return True
    if vr not in ("UN", None):
        return False
    return length == _UNDEFINED or body[fp.tell() : fp.tell() + 4] == _ITEM


def _inflate(body: bytes) -> bytes:
    """The first :data:`MAX_INFLATED_HEADER` bytes of a deflated data set (PS3.5 A.5)."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, MAX_INFLATED_HEADER)


def inflated_size_within(body: bytes, limit: int) -> bool:
    """Whether a deflated data set inflates to at most ``limit`` bytes (PS3.5 A.5).

    Inflates in pieces and keeps none of them: memory stays bounded whatever the
    data set claims.

    Raises
    ------
    zlib.error
        For data that is not raw deflate.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, data = 0, body
    while not inflater.eof:
        piece = len(inflater.decompress(data, 1024 * 1024))
        size += piece
        if size > limit:
            return False
        data = inflater.unconsumed_tail
        if not piece and not data:  # a truncated stream: nothing more will come
            break
    return True


def _dataset(
    body: bytes, transfer_syntax: str, until: int, specific_tags: list[BaseTag | int] | None
) -> Dataset:
    """The top level of ``body`` up to the tag ``until``, nested sequences checked first.

    pydicom reads a sequence of undefined length at once, recursively; one of defined
    length is skipped (``specific_tags``) or read when an attribute of it is first used.
    The ``stop_when`` hook sees each top-level element before pydicom reads it: a
    sequence of undefined length, and with ``specific_tags`` None any sequence, is
    walked first by :func:`check_sequence`.
    """
    uid = UID(transfer_syntax)
    if uid == DeflatedExplicitVRLittleEndian:  # PS3.5 A.5: raw deflate of the data set
        body = _inflate(body)
    fp = io.BytesIO(body)  # shares the bytes object, no copy
    little, every_sequence = uid.is_little_endian, specific_tags is None

    def stop_when(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) > until:  # an int comparison: BaseTag's own costs ~1 us a call
            return True
        if (length == _UNDEFINED or every_sequence) and _read_as_sequence(vr, length, body, fp):
            check_sequence(body, fp.tell(), length, vr != "SQ", little)
        return False

    return read_dataset(
        fp,
        uid.is_implicit_VR,
        little,
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
    return _instance_of(_dataset(body, transfer_syntax, _LAST_INSTANCE_TAG, _INSTANCE_TAGS))


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
    ds = _dataset(body, transfer_syntax, _PIXEL_DATA - 1, None)
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
