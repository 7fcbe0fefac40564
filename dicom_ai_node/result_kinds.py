"""Core: the kinds of result object a destination may ask for, and their SOP classes.

A destination's ``results`` (``[[ae_table]]`` and ``send.destinations``) names kinds from
:data:`RESULT_KINDS`; the default is :data:`DEFAULT_RESULTS`. Each kind has its own
Series Number within a revision's block of ten (:func:`dicom_ai_node.encode.result_series_number`
plus :attr:`ResultKind.series_offset`), so a PACS lists them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_RESULTS", "RESULT_KINDS", "ResultKind"]


@dataclass(frozen=True)
class ResultKind:
    """One kind of result object.

    Attributes
    ----------
    name:
        The name a destination's ``results`` uses.
    sop_class_uids:
        The SOP Classes of its objects (PS3.4 Annex B.5).
    series_offset:
        Added to the revision's first Series Number.
    description:
        What it is, for the documentation and the conformance statement.
    """

    name: str
    sop_class_uids: tuple[str, ...]
    series_offset: int
    description: str


#: Every kind, in the order the encoders make them (the KOS references SC and SR).
RESULT_KINDS: dict[str, ResultKind] = {
    k.name: k
    for k in (
        ResultKind(
            "SEG",
            ("1.2.840.10008.5.1.4.1.1.66.4",),
            0,
            "Segmentation (PS3.3 A.51): the label map, or the saliency maps of a classifier",
        ),
        ResultKind(
            "SR",
            ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.33"),
            1,
            "Comprehensive 3D SR and Comprehensive SR, TID 1500 measurement reports",
        ),
        ResultKind(
            "SC",
            ("1.2.840.10008.5.1.4.1.1.7",),
            3,
            "Secondary Capture key images with outlines, labels and measurements burned in",
        ),
        ResultKind(
            "KOS",
            ("1.2.840.10008.5.1.4.1.1.88.59",),
            4,
            "Key Object Selection document (PS3.3 A.35.4) referencing the key images and SR",
        ),
        ResultKind(
            "GSPS",
            ("1.2.840.10008.5.1.4.1.1.11.1",),
            5,
            "Grayscale Softcopy Presentation State: outlines and measurements on the source",
        ),
        ResultKind(
            "PDF",
            ("1.2.840.10008.5.1.4.1.1.104.1",),
            6,
            "Encapsulated PDF report: findings, measurements, model card summary, key slice",
        ),
    )
}

#: What a destination gets when its entry does not say.
DEFAULT_RESULTS: tuple[str, ...] = ("SEG", "SR")
