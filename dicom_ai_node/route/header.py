"""Route: turn one dataset's top-level attributes into a plain header and a SeriesInfo.

The header is what rules match on (keyword -> value), so it holds only small, JSON-ready
values: no pixel data, no bulk data and no sequences (except the Anatomic Region
Sequence, PS3.3 C.7.3.1, which body-part normalisation needs). Reading is tolerant: an
element pydicom cannot convert is left out, never raised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from ..domain import Code, SeriesInfo

__all__ = ["MAX_VALUE_BYTES", "header_of", "series_info"]

logger = logging.getLogger(__name__)

#: Values longer than this (in characters of their text form) are left out of the header.
MAX_VALUE_BYTES = 1024

_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_CODE_SEQUENCES = frozenset({"AnatomicRegionSequence"})

Scalar = str | int | float


def header_of(ds: Dataset) -> dict[str, Any]:
    """Summarise the top-level attributes of ``ds`` as keyword -> JSON-ready value.

    Values become ``str``, ``int`` or ``float`` (PersonName as its text, DS as float, IS as
    int); multi-valued attributes become lists. Left out: private and unknown elements,
    empty values, bulk data (PixelData and any OB/OD/OF/OL/OV/OW/UN value), values longer
    than :data:`MAX_VALUE_BYTES`, non-finite numbers and sequences, except
    ``AnatomicRegionSequence`` (PS3.3 C.7.3.1, Table 10-5) which becomes a list of
    ``[CodeValue, CodingSchemeDesignator, CodeMeaning]``.

    Parameters
    ----------
    ds:
        A dataset as read by pydicom (file meta is not included).

    Returns
    -------
    dict[str, Any]
        The header; never raises for a malformed element, which is left out.
    """
    header: dict[str, Any] = {}
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
            keyword = elem.keyword
            if not keyword or elem.tag.is_private or elem.tag.group == 0x0002:
                continue
            if elem.VR == "SQ":
                if keyword in _CODE_SEQUENCES:
                    codes = _codes_of(elem.value)
                    if codes:
                        header[keyword] = codes
                continue
            if elem.VR in _BULK_VRS or keyword == "PixelData":
                continue
            value = _plain(elem.value)
        except Exception as exc:  # tolerant input: any element that fails is skipped
            logger.debug("header: skipped element %s: %s", tag, exc)
            continue
        if value is None or value == "" or value == []:
            continue
        if len(str(value)) > MAX_VALUE_BYTES:
            continue
        header[keyword] = value
    return header


def _plain(value: Any) -> Scalar | list[Scalar] | None:
    """Convert a pydicom value to str/int/float or a list of them; ``None`` to skip it."""
    if isinstance(value, MultiValue | list | tuple):
        items = [_scalar(v) for v in value]
        if any(v is None for v in items):
            return None
        return [v for v in items if v is not None]
    return _scalar(value)


def _scalar(value: Any) -> Scalar | None:
    if value is None or isinstance(value, bytes | bytearray | memoryview):
        return None
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):  # includes pydicom IS
        return int(value)
    if isinstance(value, float):  # includes pydicom DSfloat
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):  # includes UID, DA/TM/DT as text
        return str(value)
    return None


def _codes_of(items: Iterable[Dataset]) -> list[list[str]]:
    codes = []
    for item in items:
        value = str(item.get("CodeValue", "") or item.get("LongCodeValue", "") or "")
        scheme = str(item.get("CodingSchemeDesignator", "") or "")
        meaning = str(item.get("CodeMeaning", "") or "")
        if value:
            codes.append([value, scheme, meaning])
    return codes


def series_info(
    header: Mapping[str, Any],
    *,
    number_of_instances: int,
    sop_class_uids: Iterable[str],
    calling_ae_title: str = "",
) -> SeriesInfo:
    """Build the domain :class:`~dicom_ai_node.domain.SeriesInfo` from one instance's header.

    Geometry comes from the top-level attributes of the Image Plane Module (PS3.3
    C.7.6.2): SliceThickness, PixelSpacing and ImageOrientationPatient. Enhanced
    multi-frame objects keep these in functional group sequences, which the header leaves
    out, so for them only NumberOfFrames is taken and the geometry stays ``None``.

    Parameters
    ----------
    header:
        The output of :func:`header_of` for a representative instance.
    number_of_instances:
        Instances received for the series.
    sop_class_uids:
        SOP Class UIDs seen in the series; when empty, the header's SOPClassUID is used.
    calling_ae_title:
        The AE title that sent the series.

    Returns
    -------
    SeriesInfo
        The summary; missing or malformed attributes become their defaults.
    """
    classes = frozenset(str(uid) for uid in sop_class_uids if str(uid))
    if not classes and header.get("SOPClassUID"):
        classes = frozenset({str(header["SOPClassUID"])})
    spacing = _floats(header.get("PixelSpacing"))
    return SeriesInfo(
        study_instance_uid=_text(header.get("StudyInstanceUID")),
        series_instance_uid=_text(header.get("SeriesInstanceUID")),
        modality=_text(header.get("Modality")).upper(),
        sop_class_uids=classes,
        number_of_instances=number_of_instances,
        calling_ae_title=calling_ae_title.strip(),
        body_part_examined=_text(header.get("BodyPartExamined")),
        study_description=_text(header.get("StudyDescription")),
        series_description=_text(header.get("SeriesDescription")),
        protocol_name=_text(header.get("ProtocolName")),
        anatomic_region_codes=_codes(header.get("AnatomicRegionSequence")),
        image_type=tuple(_text(v).upper() for v in _as_list(header.get("ImageType"))),
        slice_thickness=_float(header.get("SliceThickness")),
        pixel_spacing=(spacing[0], spacing[1]) if spacing and len(spacing) == 2 else None,
        image_orientation_patient=_floats(header.get("ImageOrientationPatient"), length=6),
        number_of_frames=max(1, _int(header.get("NumberOfFrames")) or 1),
        header=dict(header),
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _float(value: Any) -> float | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        number = float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _floats(value: Any, length: int | None = None) -> tuple[float, ...] | None:
    items = _as_list(value)
    numbers = [_float(v) for v in items]
    if not numbers or any(n is None for n in numbers):
        return None
    if length is not None and len(numbers) != length:
        return None
    return tuple(n for n in numbers if n is not None)


def _codes(value: Any) -> tuple[Code, ...]:
    codes = []
    for item in _as_list(value):
        if isinstance(item, list | tuple) and len(item) == 3:
            codes.append(Code(str(item[0]), str(item[1]), str(item[2])))
    return tuple(codes)
