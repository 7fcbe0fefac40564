"""Receive: named DIMSE status values for C-STORE and C-ECHO responses (PS3.4 B.2.3, PS3.7 C)."""

from __future__ import annotations

__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_DOES_NOT_MATCH_SOP_CLASS",
    "DUPLICATE_SOP_INSTANCE",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SUCCESS",
    "UNRECOGNIZED_OPERATION",
]

SUCCESS = 0x0000
#: PS3.7 C.4.1 general failure: the SOP Instance UID was stored before with other content.
DUPLICATE_SOP_INSTANCE = 0x0111
#: PS3.7 C.4.1 general failure.
PROCESSING_FAILURE = 0x0110
#: PS3.7 Annex C general failure: an operation the node does not serve (a C-FIND on a
#: Storage SCP, any DIMSE-N request).
UNRECOGNIZED_OPERATION = 0x0211
#: PS3.4 B.2.3 Refused: Out of Resources (disk full, index unavailable).
OUT_OF_RESOURCES = 0xA700
#: PS3.4 B.2.3 Error: Data Set does not match SOP Class (or the command's UIDs).
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
#: PS3.4 B.2.3 Error: Cannot understand (unparseable data set, missing or bad UIDs).
CANNOT_UNDERSTAND = 0xC000
