"""Privacy: a result made elsewhere from de-identified data, put back into its study.

A model that ran on a de-identified study returns objects (SEG, SR, ...) that reference
the pseudonymous study, series, instances and frame of reference and carry the
pseudonymous patient. :func:`reidentify` maps every UID the study's
:class:`~.mapping.StudyMapping` replaced back to the original, wherever it occurs
(Referenced Series/Instance/Image Sequences, Source Image Sequence, Current Requested
Procedure Evidence Sequence, Frame of Reference UID, UIDREF content items, ...), leaves
the result's own new UIDs alone, removes the de-identification markers and writes the
original patient and study attributes (and the source's equipment where the result names
it), so that the result files into the original study.
"""

from __future__ import annotations

import copy

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from ..errors import PrivacyError
from .engine import DUMMIES
from .mapping import StudyMapping
from .markers import DEIDENTIFICATION_MARKERS, EQUIPMENT_KEYWORDS, PATIENT_STUDY_KEYWORDS

__all__ = ["reidentify"]

#: Purpose of Reference of the source's equipment in Contributing Equipment (PS3.16 CID 7005).
_ACQUISITION_EQUIPMENT = "109101"
#: Type 2 attributes of the Patient and General Study modules: present even when empty.
_TYPE_2 = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    }
)


def _restore_uids(ds: Dataset, originals: dict[str, str], names: dict[str, str]) -> None:
    """Replace, at every depth, UIDs and pseudonyms the mapping knows by their originals."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _restore_uids(item, originals, names)
        elif elem.VR == "UI" and not elem.is_empty:
            values = [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value)]
            restored = [originals.get(v, v) for v in values]
            if restored != values:
                elem.value = restored if elem.VM > 1 else restored[0]
        elif elem.VR in ("LO", "PN") and not elem.is_empty and str(elem.value) in names:
            elem.value = names[str(elem.value)]


def _copy_patient_and_study(result: Dataset, original: Dataset) -> None:
    """Write the original's patient/study attributes; drop what the original lacked."""
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in original:
            result[keyword] = copy.deepcopy(original[keyword])
        elif keyword in _TYPE_2:
            elem = result.data_element(keyword) if keyword in result else None
            if elem is not None:
                result[elem.tag] = DataElement(elem.tag, elem.VR, None)
        elif keyword in result:
            del result[keyword]
    text = [str(e.value) for e in original if e.VR in ("PN", "LO", "SH", "LT", "ST", "UT")]
    if any(not t.isascii() for t in text):
        result.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 holds whatever the original had


def _restore_equipment(result: Dataset, original: Dataset) -> None:
    """The source's equipment in Contributing Equipment items, as the original named it.

    A result made from the de-identified series describes that series' equipment, whose
    institution, station and serial number are the profile's dummies (or absent).
    """
    for item in result.get("ContributingEquipmentSequence", None) or []:
        purposes = item.get("PurposeOfReferenceCodeSequence", None) or []
        if not any(p.get("CodeValue", "") == _ACQUISITION_EQUIPMENT for p in purposes):
            continue
        for keyword in EQUIPMENT_KEYWORDS:
            if keyword in original:
                item[keyword] = copy.deepcopy(original[keyword])
            elif keyword in item and item[keyword].value in (DUMMIES.get(item[keyword].VR), ""):
                del item[keyword]


def reidentify(result_ds: Dataset, mapping: StudyMapping) -> Dataset:
    """Map a result made from a de-identified study back to the original identifiers.

    Parameters
    ----------
    result_ds:
        The result (SEG, SR, ...) as it came back; never modified.
    mapping:
        The mapping the study was de-identified with (:meth:`StudyMapping.load` by the
        result's Study Instance UID).

    Returns
    -------
    pydicom.dataset.Dataset
        A copy referencing the original UIDs, with the original patient and study
        attributes and without Patient Identity Removed, De-identification Method (and its
        code sequence) and Longitudinal Temporal Information Modified. UIDs the mapping
        does not know (the result's own SOP Instance and Series UIDs) are unchanged.

    Raises
    ------
    PrivacyError
        If the result does not belong to the mapping's (pseudonymous) study: stamping
        this patient's identity on another study's result would misfile it.
    """
    pseudonymous_study = mapping.pseudonymous_study_uid
    if str(result_ds.get("StudyInstanceUID", "")) != pseudonymous_study:
        raise PrivacyError("the result does not belong to the de-identified study")
    out = copy.deepcopy(result_ds)
    originals = mapping.originals_by_replacement()
    names = {
        ident.pseudonym: ident.original
        for keyword, ident in mapping.identifiers.items()
        if keyword in ("PatientID", "PatientName") and ident.pseudonym
    }
    _restore_uids(out, originals, names)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        _restore_uids(meta, originals, names)
    for keyword in DEIDENTIFICATION_MARKERS:
        if keyword in out:
            del out[keyword]
    _copy_patient_and_study(out, mapping.original_dataset())
    _restore_equipment(out, mapping.original_equipment_dataset())
    return out
