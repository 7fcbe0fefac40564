"""Conformance statement: what the DIMSE statuses and the A-ASSOCIATE-RJ/A-ABORT values mean.

PS3.7 Annex C and PS3.4 B.2.3 (statuses), PS3.8 9.3.4 and 9.3.8 (rejection and abort).
"""

from __future__ import annotations

__all__ = [
    "ABORT_REASON",
    "ABORT_SOURCE",
    "RJ_REASON",
    "RJ_RESULT",
    "RJ_SOURCE",
    "STATUS_MEANINGS",
    "STOW_FAILURE_MEANINGS",
]

#: What each named C-STORE/C-ECHO status of ``receive/status.py`` means to a sender. A
#: status added there without a line here stops the generator (the statement must say it).
STATUS_MEANINGS = {
    "SUCCESS": (
        "Success",
        "The instance is on disk (fsynced) and indexed; the node is responsible for it.",
    ),
    "DUPLICATE_SOP_INSTANCE": (
        "Failure",
        "The SOP Instance UID was stored before with other content; the first copy is kept "
        "and the event is recorded in the study's history. An identical re-send is Success.",
    ),
    "PROCESSING_FAILURE": ("Failure", "An unexpected processing failure."),
    "UNRECOGNIZED_OPERATION": (
        "Failure",
        "A DIMSE operation the node does not serve (C-FIND, C-MOVE, C-GET, any DIMSE-N) on "
        "an accepted context.",
    ),
    "OUT_OF_RESOURCES": (
        "Refused",
        "Free disk below storage.min_free_mb, or the index could not take the instance "
        "within storage.db_lock_timeout_s. The sender may retry later.",
    ),
    "DATASET_DOES_NOT_MATCH_SOP_CLASS": (
        "Error",
        "The data set's SOP Class or Instance UID differs from the command's, or the "
        "SOP Class is not the context's abstract syntax.",
    ),
    "CANNOT_UNDERSTAND": (
        "Error",
        "The data set cannot be parsed, or Study, Series or SOP Instance UID is missing "
        "or not a conformant UID.",
    ),
}

RJ_RESULT = {1: "rejected-permanent", 2: "rejected-transient"}
RJ_SOURCE = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (Presentation related function)",
}
ABORT_SOURCE = {0: "DICOM UL service-user", 2: "DICOM UL service-provider"}
RJ_REASON = {
    (1, 1): "no-reason-given",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}
ABORT_REASON = {6: "invalid-PDU-parameter-value"}


#: What each Failure Reason (0008,1197) of ``web/stow_response.py`` means to a STOW-RS
#: client. A reason added there without a line here stops the generator.
STOW_FAILURE_MEANINGS = {
    "OUT_OF_RESOURCES": (
        "Free disk below storage.min_free_mb, the index busy past its lock timeout, or a "
        "part larger than dicom.max_instance_mb. The client may retry later."
    ),
    "DATASET_DOES_NOT_MATCH_SOP_CLASS": (
        "The part's file meta names another SOP Class or Instance UID than its data set."
    ),
    "CANNOT_UNDERSTAND": ("Not a PS3.10 file, unreadable, or missing or non-conformant UIDs."),
    "TRANSFER_SYNTAX_NOT_SUPPORTED": "A transfer syntax the DIMSE listener does not accept.",
    "SOP_CLASS_NOT_SUPPORTED": "A SOP Class the DIMSE listener does not accept.",
    "DUPLICATE_SOP_INSTANCE": (
        "Stored before with other content; the first copy is kept. An identical re-post "
        "is a success."
    ),
    "STUDY_UID_MISMATCH": (
        "Not of the study the URL names (POST /dicom-web/studies/{study}); not stored. "
        "PS3.18 Table I.2-2 has no code for this; C409 is the one dcm4chee-arc uses."
    ),
}
