"""Privacy: de-identify studies for models that run elsewhere, re-identify results.

The Basic Application Level Confidentiality Profile of DICOM PS3.15 Annex E (Table
E.1-1) with the Retain UIDs (E.3.9) and Retain Device Identity (E.3.8) Options
(:func:`deidentify`), a per-study record of what replaced what (:class:`StudyMapping`)
and the way back for results (:func:`reidentify`). Replacement UIDs and pseudonyms are
HMAC digests under the node's secret (:func:`load_or_create_secret`). Not wired into the
pipeline yet: there is no remote-model sender (docs/security.md, De-identification).
"""

from __future__ import annotations

from .engine import DUMMIES, deidentify
from .mapping import Identifier, StudyMapping
from .markers import (
    DEIDENTIFICATION_MARKERS,
    EQUIPMENT_KEYWORDS,
    PATIENT_STUDY_KEYWORDS,
    method_description,
)
from .reidentify import reidentify
from .secret import Pseudonyms, load_or_create_secret, secret_file_path
from .table import Action, ActionTable, ProfileRow, load_table

__all__ = [
    "DEIDENTIFICATION_MARKERS",
    "DUMMIES",
    "EQUIPMENT_KEYWORDS",
    "PATIENT_STUDY_KEYWORDS",
    "Action",
    "ActionTable",
    "Identifier",
    "ProfileRow",
    "Pseudonyms",
    "StudyMapping",
    "deidentify",
    "load_or_create_secret",
    "load_table",
    "method_description",
    "reidentify",
    "secret_file_path",
]
