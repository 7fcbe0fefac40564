"""Web: a STOW-RS response: its HTTP status and Store Instances Response Module.

PS3.18 10.5.3 and Annex I: 200 when every instance was stored; 202 when some were and
others failed; 409 when none was (each failure in the Failed SOP Sequence with its
Failure Reason); 400 for a body that cannot be read and 415 for media types the node
does not store, both storing nothing. The body is DICOM JSON (PS3.18 F.2,
``application/dicom+json``). The node serves no Studies Retrieve Transaction, so the
Retrieve URL (Type 2) is present and empty. The node never coerces an attribute, so no
instance is stored with a Warning Reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..dicomweb import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
)

__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_DOES_NOT_MATCH_SOP_CLASS",
    "DUPLICATE_SOP_INSTANCE",
    "OUT_OF_RESOURCES",
    "SOP_CLASS_NOT_SUPPORTED",
    "STUDY_UID_MISMATCH",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "Outcome",
    "response_body",
    "response_status",
]

# Failure Reason (0008,1197) values, PS3.18 Table I.2-2 unless noted.
#: Refused: Out of Resources (volume full, index unavailable, a part over its bound).
OUT_OF_RESOURCES = 0xA700
#: Error: Data Set does not match SOP Class (here: the file meta names other UIDs than
#: the data set, as a C-STORE whose command and data set differ, PS3.4 B.2.3).
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
#: Error: Cannot understand (not a PS3.10 file, unreadable, missing or bad UIDs, or a
#: part of another media type).
CANNOT_UNDERSTAND = 0xC000
#: Referenced Transfer Syntax not supported.
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
#: Referenced SOP Class not supported.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Duplicate SOP Instance (PS3.7 C.4.1): stored before with other content, first kept.
DUPLICATE_SOP_INSTANCE = 0x0111
#: Not of the study the URL names (PS3.18 10.5.1: such an instance is not stored). Table
#: I.2-2 has no code for it and allows additional ones; this is the one dcm4chee-arc uses,
#: in the Cxxx (cannot understand) range.
STUDY_UID_MISMATCH = 0xC409

_UI, _US = "UI", "US"
_SOP_CLASS, _SOP_INSTANCE = "00081150", "00081155"


class Outcome(Protocol):
    """What the response needs of one part (:class:`~.stow_store.PartOutcome`)."""

    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def failure(self) -> int | None: ...
    @property
    def unsupported(self) -> bool: ...


def response_status(outcomes: Sequence[Outcome]) -> int:
    """The HTTP status of a request whose body was read whole (PS3.18 10.5.3).

    400 without any part; 200 all stored; 202 some stored; 415 none stored and every
    failure a part of another media type; else 409.
    """
    if not outcomes:
        return 400
    failed = [o for o in outcomes if o.failure is not None]
    if not failed:
        return 200
    if len(failed) < len(outcomes):
        return 202
    if all(o.unsupported for o in failed):
        return 415
    return 409


def _uid(value: str) -> dict[str, Any]:
    return {"vr": _UI, "Value": [value]} if value else {"vr": _UI}


def _reference(outcome: Outcome) -> dict[str, Any]:
    """A SOP Instance Reference Macro item (PS3.3 Table 10-11)."""
    return {_SOP_CLASS: _uid(outcome.sop_class_uid), _SOP_INSTANCE: _uid(outcome.sop_instance_uid)}


def response_body(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The Store Instances Response Module in DICOM JSON (PS3.18 Table I.1-1).

    A part whose UIDs could not be read is listed in the Failed SOP Sequence with empty
    UIDs, so that a client still counts it.
    """
    body: dict[str, Any] = {}
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    if stored:
        body[RETRIEVE_URL] = {"vr": "UR"}
        body[REFERENCED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [_reference(o) | {RETRIEVE_URL: {"vr": "UR"}} for o in stored],
        }
    if failed:
        body[FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                _reference(o) | {FAILURE_REASON: {"vr": _US, "Value": [o.failure]}} for o in failed
            ],
        }
    return body
