"""Send: STOW-RS requests and answers: files planned into per-study batches, streamed as
``multipart/related`` parts, and each instance's fate read from the answer.

PS3.18 10.5 (Store Transaction): the request body is ``multipart/related`` (RFC 2387)
with one ``application/dicom`` part per PS3.10 file (PS3.18 8.6.1.2); the answer is a
DICOM JSON data set (PS3.18 F.2) naming the stored instances in the Referenced SOP
Sequence (0008,1199) and the refused ones in the Failed SOP Sequence (0008,1198) with a
Failure Reason (0008,1197). Answers are read tolerantly: whatever the HTTP status and
whether or not the Content-Type says ``application/dicom+json`` (Orthanc's 400 and 409
carry none).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from ..dicomweb import (
    DICOM_PART,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_SEQUENCE,
    WARNING_REASON,
)
from .scu import STATUS_SUCCESS, StoreOutcome

__all__ = [
    "MAX_ANSWER_BYTES",
    "REFERENCED_SOP_INSTANCE_UID",
    "StowAnswer",
    "StowBody",
    "StowPart",
    "batches",
    "bounded_answer",
    "describe_reason",
    "outcome",
    "plan_part",
    "read_answer",
    "status_text",
    "stored",
    "whole_failure",
]

#: Referenced SOP Instance UID (0008,1155) as a DICOM JSON key.
REFERENCED_SOP_INSTANCE_UID = "00081155"
_CHUNK = 1 << 20
_HEADER_TAGS = ["StudyInstanceUID", "SOPInstanceUID"]

#: Failure and Warning Reason values a STOW-RS answer uses (PS3.18 10.5.3, taking the
#: Storage statuses of PS3.4 B.2.3 and the general ones of PS3.7 C.4).
REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0xA700: "refused: out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}


def describe_reason(code: int) -> str:
    """``0x0110 (processing failure)``: a Failure or Warning Reason as people read it."""
    known = REASONS.get(code)
    if known is None and code >> 8 == 0xA7:
        known = REASONS[0xA700]
    if known is None and code >> 8 == 0xA9:
        known = REASONS[0xA900]
    if known is None and code >> 12 == 0xC:
        known = REASONS[0xC000]
    return f"0x{code:04X} ({known})" if known else f"0x{code:04X}"


@dataclass(frozen=True)
class StowPart:
    """One file to send, as its header names it.

    Attributes
    ----------
    index:
        Its place in the caller's list (outcomes come back in that order).
    path:
        The PS3.10 file, sent as it is on disk.
    size:
        Its length in bytes when planned.
    study_instance_uid, sop_instance_uid:
        From the data set (the study picks the request's URL, PS3.18 10.5.1).
    """

    index: int
    path: Path
    size: int
    study_instance_uid: str
    sop_instance_uid: str


def plan_part(index: int, path: Path) -> StowPart | StoreOutcome:
    """Read a file's Study and SOP Instance UIDs (no pixels); an outcome when it cannot go.

    An ``application/dicom`` part is a PS3.10 file (PS3.18 8.6.1.2), so a file without
    File Meta Information is refused here rather than re-encoded.
    """
    try:
        size = path.stat().st_size
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except OSError as exc:
        return StoreOutcome("", None, False, f"not sent: cannot read {path}: {exc.strerror}")
    except (InvalidDicomError, ValueError, EOFError) as exc:
        return StoreOutcome("", None, False, f"not sent: {path} is not a DICOM file: {exc}")
    sop = str(ds.get("SOPInstanceUID", "") or "")
    if not sop:
        meta = getattr(ds, "file_meta", None)
        sop = str(meta.get("MediaStorageSOPInstanceUID", "")) if meta is not None else ""
    study = str(ds.get("StudyInstanceUID", "") or "")
    if not sop or not study:
        return StoreOutcome(sop, None, False, "not sent: no SOP Instance or Study Instance UID")
    return StowPart(index, path, size, study, sop)


def _part_header(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: {DICOM_PART}\r\n\r\n".encode("ascii")


def batches(parts: Sequence[StowPart], batch_bytes: int) -> list[list[StowPart]]:
    """Group parts by study (first appearance order) and cut each group into requests of
    at most ``batch_bytes`` of files; a file larger than that goes alone."""
    by_study: dict[str, list[StowPart]] = {}
    for part in parts:
        by_study.setdefault(part.study_instance_uid, []).append(part)
    out: list[list[StowPart]] = []
    for group in by_study.values():
        current: list[StowPart] = []
        used = 0
        for part in group:
            if current and used + part.size > batch_bytes:
                out.append(current)
                current, used = [], 0
            current.append(part)
            used += part.size
        if current:
            out.append(current)
    return out


class StowBody:
    """A request body streamed from disk, one chunk at a time, with its exact length.

    At most one chunk (1 MiB) of a file is held at once, so a request of any size costs
    the sender little memory; the Content-Length is known before the first byte, so no
    chunked transfer coding is needed (some archives refuse it).

    Parameters
    ----------
    parts:
        The files, in order.
    boundary:
        The multipart boundary (RFC 2046 5.1.1), absent from the files' bytes with
        overwhelming probability (a random 128-bit value).
    """

    def __init__(self, parts: Sequence[StowPart], boundary: str) -> None:
        self.parts = list(parts)
        self.boundary = boundary
        header = len(_part_header(boundary))
        closing = len(f"--{boundary}--\r\n")
        self.length = sum(header + p.size + 2 for p in self.parts) + closing

    def __iter__(self) -> Iterator[bytes]:
        header = _part_header(self.boundary)
        for part in self.parts:
            yield header
            left = part.size
            with part.path.open("rb") as f:
                while left > 0:
                    chunk = f.read(min(_CHUNK, left))
                    if not chunk:
                        raise OSError(f"{part.path} shrank while it was being sent")
                    left -= len(chunk)
                    yield chunk
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode("ascii")


@dataclass
class StowAnswer:
    """What a STOW-RS answer says, instance by instance.

    Attributes
    ----------
    stored:
        SOP Instance UID -> its Warning Reason (0008,1196), or ``None`` without one.
    failed:
        SOP Instance UID -> its Failure Reason (0008,1197), or ``None`` without one.
    warning:
        A Warning Reason given for the whole answer, if any.
    """

    stored: dict[str, int | None] = field(default_factory=dict)
    failed: dict[str, int | None] = field(default_factory=dict)
    warning: int | None = None

    @property
    def names_any(self) -> bool:
        """Whether the answer names at least one instance."""
        return bool(self.stored or self.failed)


def _values(element: Any) -> list[Any]:
    if not isinstance(element, dict):
        return []
    value = element.get("Value")
    return value if isinstance(value, list) else []


def _first_int(item: Any, key: str) -> int | None:
    values = _values(item.get(key)) if isinstance(item, dict) else []
    return values[0] if values and isinstance(values[0], int) else None


def _items(data: dict[str, Any], key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in _values(data.get(key)):
        if not isinstance(item, dict):
            continue
        uids = _values(item.get(REFERENCED_SOP_INSTANCE_UID))
        if uids and isinstance(uids[0], str):
            yield uids[0], item


def read_answer(body: bytes) -> StowAnswer | None:
    """Read a STOW-RS answer (PS3.18 10.5.3, DICOM JSON per PS3.18 F.2).

    Parameters
    ----------
    body:
        The response body, whatever its status and Content-Type.

    Returns
    -------
    StowAnswer | None
        The instances it names as stored and failed; ``None`` when the body is not a
        DICOM JSON data set (an HTML error page, empty, Orthanc's error object).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return None
    if not any(k in data for k in (REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE)):
        return None
    answer = StowAnswer(warning=_first_int(data, WARNING_REASON))
    for uid, item in _items(data, REFERENCED_SOP_SEQUENCE):
        answer.stored[uid] = _first_int(item, WARNING_REASON)
    for uid, item in _items(data, FAILED_SOP_SEQUENCE):
        answer.failed[uid] = _first_int(item, FAILURE_REASON)
        answer.stored.pop(uid, None)  # named both ways: not counted as stored
    return answer


def outcome(part: StowPart, status: int | None, delivered: bool, message: str) -> StoreOutcome:
    """The outcome of one part."""
    return StoreOutcome(part.sop_instance_uid, status, delivered, message)


def stored(part: StowPart, status: str, warning: int | None) -> StoreOutcome:
    """A stored instance: status 0000H, or its Warning Reason (PS3.18 10.5.3)."""
    if warning is None and not status.startswith("HTTP 202"):
        return outcome(part, STATUS_SUCCESS, True, f"stored ({status})")
    why = describe_reason(warning) if warning is not None else "no warning reason given"
    code = warning if warning is not None else STATUS_SUCCESS
    return outcome(part, code, True, f"stored with a warning ({status}): {why}")


#: Most bytes of an archive's answer read (one batch's answer names at most a few
#: thousand instances); a longer one fails the attempt instead of filling memory.
MAX_ANSWER_BYTES = 16 * 2**20


def bounded_answer(response: httpx.Response) -> bytes | None:
    """The answer's body (PS3.18 10.5.3), or None when it is over :data:`MAX_ANSWER_BYTES`."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            return None
    return bytes(data)


def status_text(response: httpx.Response) -> str:
    """``HTTP 409 Conflict``."""
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def whole_failure(response: httpx.Response, peer: str) -> str:
    """Why a request failed as a whole (PS3.18 10.5.3), as an operator reads it."""
    code = response.status_code
    text = f"{peer} answered {status_text(response)}"
    if code == 415:
        return text + ' (it does not accept multipart/related; type="application/dicom")'
    if code in (401, 403):
        return text + " (credentials refused or missing: check auth and credentials_file)"
    if 300 <= code < 400:
        return text + " (redirects are not followed: configure the final URL)"
    if code == 404:
        return text + " (no STOW-RS service at this URL)"
    return text
