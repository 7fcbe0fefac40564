"""Web: what the result preview reads from the SR: its measurement groups and regions.

Read with pydicom alone from a TID 1500 Measurement Report (PS3.16): each Measurement
Group's tracking identifier or finding, its NUM and CODE rows as lines of text, and its
SCOORD regions; tolerant of what the node does not write itself, so an SR's missing or
odd attributes make a :class:`.preview_read.PreviewError`, never another exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from ..picture import measurement_text
from .preview_read import _MALFORMED, PreviewError, _first, as_float, model_name, read_file

__all__ = ["MAX_SR_DEPTH", "Group", "Region", "read_sr"]

#: UCUM codes (PS3.16 CID 7181) shown as the symbols people read.

#: Deepest SR content tree walked (TID 1500 needs 4 levels).
MAX_SR_DEPTH = 16

_MEASUREMENT_GROUP = "125007"  # PS3.16 TID 1501/1410 "Measurement Group"
_TRACKING_ID, _TRACKING_UID = "112039", "112040"
_FINDING, _FINDING_CATEGORY = "121071", "276214006"


@dataclass(frozen=True)
class Region:
    """A SCOORD (PS3.3 C.18.6): pixel coordinates (column, row) on one image."""

    sop_instance_uid: str
    graphic_type: str
    points: npt.NDArray[np.float64]


@dataclass
class Group:
    """One measurement group of the SR: its name, lines of text and regions."""

    name: str = ""
    tracking_uid: str = ""
    lines: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)


def _concept(item: Dataset) -> tuple[str, str]:
    code = _first(item, "ConceptNameCodeSequence")
    if code is None:
        return "", ""
    return str(code.get("CodeValue", "")), str(code.get("CodeMeaning", ""))


def _num_line(item: Dataset, meaning: str) -> str:
    """A NUM content item (PS3.3 C.18.1): name, value and UCUM unit (none for "1")."""
    measured = _first(item, "MeasuredValueSequence")
    if measured is None:
        return f"{meaning}: no value"
    unit_code = _first(measured, "MeasurementUnitsCodeSequence")
    unit = str(unit_code.get("CodeValue", "")) if unit_code is not None else ""
    return measurement_text(meaning, as_float(measured.get("NumericValue"), float("nan")), unit)


def _region(item: Dataset) -> Region | None:
    ref = _first(_first(item, "ContentSequence"), "ReferencedSOPSequence")
    data = [as_float(v, 0.0) for v in item.get("GraphicData", [])]
    if ref is None or len(data) < 2:
        return None
    points = np.asarray(data[: len(data) // 2 * 2], np.float64).reshape(-1, 2)
    return Region(str(ref.ReferencedSOPInstanceUID), str(item.get("GraphicType", "")), points)


def _group(container: Dataset) -> Group:
    """Name, NUM and CODE lines and SCOORDs of one group (PS3.16 TID 1410, 1501)."""
    group = Group()
    finding = ""
    for item in container.get("ContentSequence", []):
        kind, (value, meaning) = str(item.get("ValueType", "")), _concept(item)
        answer = _first(item, "ConceptCodeSequence")
        if kind == "TEXT" and value == _TRACKING_ID:
            group.name = str(item.get("TextValue", ""))
        elif kind == "UIDREF" and value == _TRACKING_UID:
            group.tracking_uid = str(item.get("UID", ""))
        elif kind == "NUM":
            group.lines.append(_num_line(item, meaning))
        elif kind == "CODE" and value == _FINDING:
            finding = str(getattr(answer, "CodeMeaning", ""))
        elif kind == "CODE" and value != _FINDING_CATEGORY and item.RelationshipType == "CONTAINS":
            group.lines.append(f"{meaning}: {getattr(answer, 'CodeMeaning', '')}")
        elif kind == "SCOORD" and (region := _region(item)) is not None:
            group.regions.append(region)
    group.name = group.name or finding or "Finding"
    return group


def _containers(items: Sequence[Dataset], depth: int = 0) -> Iterator[Dataset]:
    for item in items:
        if item.get("ValueType") == "CONTAINER" and _concept(item)[0] == _MEASUREMENT_GROUP:
            yield item
        elif "ContentSequence" in item and depth < MAX_SR_DEPTH:
            yield from _containers(item.ContentSequence, depth + 1)


def read_sr(path: Path) -> tuple[list[Group], str]:
    """The measurement groups of a TID 1500 SR (PS3.16) and the model that made it.

    Raises
    ------
    PreviewError
        If the file cannot be read as an SR.
    """
    sr = read_file(path, pixels=False)
    try:
        groups = [_group(c) for c in _containers(sr.get("ContentSequence", []))]
    except _MALFORMED as exc:
        raise PreviewError(f"cannot read the content of {path.name}: {exc}") from exc
    return groups, model_name(sr)
