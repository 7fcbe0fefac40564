"""Conformance statement: the IOD contents of the objects the node creates (PS3.2 A.8.1).

One entry per result kind of ``encode/kinds.py`` (the generator stops on a kind without
one). ``attributes`` are the attributes the statement promises for every object of the
kind; ``tests/unit/test_conformance.py`` checks them on objects the encoders make.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMMON", "IODS", "Iod", "Module"]

#: Values every created object shares, whatever its kind.
COMMON: tuple[tuple[str, str], ...] = (
    ("PatientName", "Copied from the source"),
    ("PatientID", "Copied from the source"),
    ("PatientBirthDate", "Copied from the source"),
    ("PatientSex", "Copied from the source"),
    ("StudyInstanceUID", "Copied from the source: results join the source study"),
    ("StudyDate", "Copied from the source"),
    ("StudyTime", "Copied from the source"),
    ("AccessionNumber", "Copied from the source"),
    ("ReferringPhysicianName", "Copied from the source"),
    ("StudyID", "Copied from the source"),
    ("SeriesInstanceUID", "Derived from the job (deterministic)"),
    ("SOPInstanceUID", "Derived from the job (deterministic)"),
    ("SeriesNumber", "First result Series Number + 10 x revision + the kind's offset"),
    ("SeriesDescription", "`AI <model> <version> <KIND>` [`revised <n>`]"),
    ("Manufacturer", "`{manufacturer}`"),
    ("ManufacturerModelName", "The model's name"),
    ("SoftwareVersions", "The model's version"),
    ("DeviceUID", "Derived from the model's name and version: identifies the node's objects"),
    ("ContributingEquipmentSequence", "The model as Processing Equipment (109102, DCM)"),
    ("InstanceCreationDate", "When the model's results were made (stable on re-encoding)"),
    ("SpecificCharacterSet", "`ISO_IR 192` (UTF-8)"),
)


@dataclass(frozen=True)
class Module:
    """A module of an IOD: name, PS3.3 section, usage (PS3.3) and whether it is written."""

    name: str
    reference: str
    usage: str
    present: str


@dataclass(frozen=True)
class Iod:
    """What the node writes for one result kind."""

    title: str
    reference: str
    modules: tuple[Module, ...]
    attributes: tuple[tuple[str, str], ...]
    notes: str


def _m(name: str, reference: str, usage: str, present: str = "Always") -> Module:
    return Module(name, reference, usage, present)


_PATIENT_STUDY = (
    _m("Patient", "C.7.1.1", "M", "Always, copied from the source"),
    _m("General Study", "C.7.2.1", "M", "Always, copied from the source"),
    _m("Patient Study", "C.7.2.2", "U", "When the source has its attributes"),
)
_SOP_COMMON = _m("SOP Common", "C.12.1", "M", "Always, with Contributing Equipment")

IODS: dict[str, Iod] = {
    "SEG": Iod(
        "Segmentation",
        "PS3.3 A.51",
        (
            *_PATIENT_STUDY,
            _m("General Series", "C.7.3.1", "M"),
            _m("Segmentation Series", "C.8.20.1", "M"),
            _m("Frame of Reference", "C.7.4.1", "C", "When the source has one"),
            _m("General Equipment", "C.7.5.1", "M"),
            _m("Enhanced General Equipment", "C.7.5.2", "M"),
            _m("General Image", "C.7.6.1", "M"),
            _m("Image Pixel", "C.7.6.3", "M"),
            _m("Segmentation Image", "C.8.20.2", "M"),
            _m("Multi-frame Functional Groups", "C.7.6.16", "M"),
            _m("Multi-frame Dimension", "C.7.6.17", "M"),
            _m("Common Instance Reference", "C.12.2", "C"),
            _SOP_COMMON,
        ),
        (
            ("SegmentationType", "`BINARY` (label maps) or `FRACTIONAL` (saliency maps)"),
            (
                "SegmentSequence",
                "One segment per label with voxels: coded category and type, "
                "Tracking ID/UID, display colour, Algorithm Identification (AUTOMATIC)",
            ),
            ("SourceImageSequence", "The source images the frames were derived from"),
            ("ReferencedSeriesSequence", "The source series"),
            ("DimensionOrganizationSequence", "Deterministic Dimension Organization UID"),
            ("ContentLabel", "Fixed text"),
        ),
        "Empty frames are omitted. A FRACTIONAL segmentation (PROBABILITY) carries a "
        "classifier's saliency maps (segmented property 130404, DCM, Saliency). A series "
        "without a Frame of Reference gets one SEG per source image.",
    ),
    "SR": Iod(
        "Comprehensive 3D SR",
        "PS3.3 A.35.13",
        (
            *_PATIENT_STUDY,
            _m("SR Document Series", "C.17.1", "M"),
            _m("General Equipment", "C.7.5.1", "M"),
            _m("SR Document General", "C.17.2", "M"),
            _m("SR Document Content", "C.17.3", "M"),
            _SOP_COMMON,
        ),
        (
            ("ContentTemplateSequence", "TID 1500, DCMR"),
            ("CompletionFlag", "`COMPLETE`"),
            ("VerificationFlag", "`UNVERIFIED`: machine output no person has verified"),
            ("PreliminaryFlag", "`FINAL`"),
            ("CurrentRequestedProcedureEvidenceSequence", "The source series' instances"),
            ("PerformedProcedureCodeSequence", "Empty"),
            ("ContentSequence", "TID 1500 Measurement Report (Annex A.3)"),
        ),
        "Two documents per job at most: the measurement SR (one TID 1410 planar ROI group "
        "per label, its SCOORD on the source slice where the label is largest) and the "
        "findings SR (TID 1501 groups without geometry: quality issues, measurements of "
        "labels without voxels; its Series Number offset is +2). A revision names the "
        "SRs it replaces in Predecessor Documents Sequence. The kind also lists "
        "Comprehensive SR so that such documents can be delivered; the encoders write "
        "Comprehensive 3D SR.",
    ),
    "SC": Iod(
        "Secondary Capture Image",
        "PS3.3 A.8.1",
        (
            *_PATIENT_STUDY,
            _m("General Series", "C.7.3.1", "M"),
            _m("General Equipment", "C.7.5.1", "U"),
            _m("SC Equipment", "C.8.6.1", "M"),
            _m("General Image", "C.7.6.1", "M"),
            _m("General Reference", "C.12.4", "U", "Always: Source Image Sequence"),
            _m("Image Pixel", "C.7.6.3", "M"),
            _m("SC Image", "C.8.6.2", "U"),
            _SOP_COMMON,
        ),
        (
            ("BurnedInAnnotation", "`YES`"),
            ("SourceImageSequence", "The source image the key image shows"),
            ("ConversionType", "`WSD` (workstation)"),
            ("PhotometricInterpretation", "`RGB`, sized like the source image"),
        ),
        "One key image per finding (the slice where its area is largest), per key slice "
        "for organ results, per image for a radiograph: the source pixels with the outline, "
        "labels, measurements and the caption NOT FOR DIAGNOSIS - AI RESULT, model and "
        "version burned in.",
    ),
    "KOS": Iod(
        "Key Object Selection Document",
        "PS3.3 A.35.4",
        (
            *_PATIENT_STUDY,
            _m("Key Object Document Series", "C.17.6.1", "M"),
            _m("General Equipment", "C.7.5.1", "M"),
            _m("Key Object Document", "C.17.6.2", "M"),
            _m("SR Document Content", "C.17.3", "M"),
            _SOP_COMMON,
        ),
        (
            ("ContentTemplateSequence", "TID 2010, DCMR"),
            ("CurrentRequestedProcedureEvidenceSequence", "The key images and SR referenced"),
        ),
        "References the job's key images and SR documents (TID 2010, document title from "
        "CID 7010), so that a PACS lists them as the study's key images.",
    ),
    "GSPS": Iod(
        "Grayscale Softcopy Presentation State",
        "PS3.3 A.33.1",
        (
            *_PATIENT_STUDY,
            _m("General Series", "C.7.3.1", "M"),
            _m("Presentation Series", "C.11.9", "M"),
            _m("General Equipment", "C.7.5.1", "M"),
            _m("Presentation State Identification", "C.11.10", "M"),
            _m("Presentation State Relationship", "C.11.11", "M"),
            _m("Displayed Area", "C.10.4", "M"),
            _m("Graphic Annotation", "C.10.5", "C", "Always: outlines and measurement text"),
            _m("Graphic Layer", "C.10.7", "C", "Always"),
            _m("Softcopy Presentation LUT", "C.11.6", "M"),
            _SOP_COMMON,
        ),
        (
            ("ReferencedSeriesSequence", "The source series and images it applies to"),
            ("GraphicAnnotationSequence", "Outlines as POLYLINE, measurements as text"),
            ("GraphicLayerSequence", "The layer of the annotations"),
        ),
        "One presentation state per source series; it adds no pixels and applies to the "
        "source images as they are.",
    ),
    "PDF": Iod(
        "Encapsulated PDF",
        "PS3.3 A.45.1",
        (
            *_PATIENT_STUDY,
            _m("Encapsulated Document Series", "C.24.1", "M"),
            _m("General Equipment", "C.7.5.1", "M"),
            _m("SC Equipment", "C.8.6.1", "M"),
            _m("Encapsulated Document", "C.24.2", "M"),
            _SOP_COMMON,
        ),
        (
            ("MIMETypeOfEncapsulatedDocument", "`application/pdf`"),
            (
                "BurnedInAnnotation",
                "`YES`: the report names the study (date, accession, UIDs), not the patient",
            ),
            ("EncapsulatedDocument", "The report"),
        ),
        "A report of the findings, measurements, the model card's summary and a picture "
        "of the key slice, for PACS that show documents.",
    ),
}
