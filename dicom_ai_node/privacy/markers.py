"""Privacy: the attributes that mark de-identification and those kept to undo it.

What PS3.15 E.1.1 asks a de-identified instance to say about itself (Patient Identity
Removed, De-identification Method and its CID 7050 codes, Longitudinal Temporal
Information Modified: PS3.3 C.7.1.1, C.7.1.3), and which modules of the original the
study's mapping keeps so that results can be re-identified.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

__all__ = [
    "DEIDENTIFICATION_MARKERS",
    "EQUIPMENT_KEYWORDS",
    "PATIENT_STUDY_KEYWORDS",
    "add_markers",
    "method_description",
]

#: Attributes that say an object is de-identified (PS3.3 C.7.1.1, PS3.15 E.1.1).
DEIDENTIFICATION_MARKERS = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)

#: Patient (PS3.3 C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2) module
#: attributes kept in the mapping and copied back into re-identified results.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingService",
    "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "AdmissionID",
)
#: General Equipment module attributes (PS3.3 C.7.5.1) of the original kept in the
#: mapping: results name the source's equipment in a Contributing Equipment item (PS3.3
#: C.12.1, purpose 109101 "Acquisition Equipment"), which re-identification restores.
EQUIPMENT_KEYWORDS = (
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "SoftwareVersions",
)


def method_description(retain_uids: bool, retain_device: bool) -> str:
    """The De-identification Method (0012,0063) value written (LO, at most 64 characters)."""
    parts = ["PS3.15 E Basic"]
    if retain_uids:
        parts.append("Retain UIDs")
    if retain_device:
        parts.append("Retain Device Identity")
    return ", ".join(parts)


def add_markers(ds: Dataset, retain_uids: bool, retain_device: bool) -> None:
    """Patient Identity Removed, the method text and CID 7050 codes (PS3.15 E.1.1).

    Existing values (an instance de-identified before) are kept and ours appended, as
    De-identification Method (0012,0063) is multi-valued for that case (PS3.3 C.7.1.1).
    """
    ds.PatientIdentityRemoved = "YES"
    old = ds.get("DeidentificationMethod", None)
    methods = [] if not old else [str(old)] if isinstance(old, str) else [str(m) for m in old]
    ds.DeidentificationMethod = [*methods, method_description(retain_uids, retain_device)]
    used = [codes.DCM.BasicApplicationConfidentialityProfile]
    if retain_uids:
        used.append(codes.DCM.RetainUidsOption)
    if retain_device:
        used.append(codes.DCM.RetainDeviceIdentityOption)
    sequence = Sequence(list(ds.get("DeidentificationMethodCodeSequence", None) or []))
    for code in used:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        sequence.append(item)
    ds.DeidentificationMethodCodeSequence = sequence
    # Neither option offered keeps dates: they are removed or dummies (PS3.3 C.7.1.1).
    ds.LongitudinalTemporalInformationModified = "REMOVED"
