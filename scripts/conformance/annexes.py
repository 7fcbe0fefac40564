"""Conformance statement: section 8, the annexes (PS3.2 A.8), written from the facts."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from .facts import CREATED_TRANSFER_SYNTAX, Facts, uid_name
from .iods import COMMON, IODS, Iod
from .markdown import Doc, table, uid

__all__ = ["annexes"]

#: The Audit Event ID codes (PS3.16 CID 400) and when the node writes each.
AUDIT_TRIGGERS = {
    "110100": "The node starts or stops (Application Start / Stop).",
    "110104": "A study was received (action C) or results were delivered (action R).",
    "110113": "An association refused (unknown caller, wrong called AE title, user "
    "identity refused), a failed TLS handshake, an operator's action that changes what "
    "the node does (Software Configuration), a web request refused (Use of Restricted "
    "Function).",
    "110114": "A login, failed login or logout at the web service.",
}


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not a DICOM keyword (scripts/conformance/iods.py)")
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _iod(doc: Doc, facts: Facts, number: int, kind: str, iod: Iod) -> None:
    sop = next(k for k in facts.result_kinds if k.name == kind)
    classes = ", ".join(f"{uid_name(u)} ({uid(u)})" for u in sop.sop_class_uids)
    doc.annex(3, f"A.1.{number - 2}", f"{iod.title} ({kind})")
    doc.add(
        f"SOP Class: {classes}. IOD: {iod.reference}. Series Number offset within a "
        f"revision: +{sop.series_offset}. {iod.notes}",
        table(
            ("Module", "PS3.3", "Usage", "Written"),
            ((m.name, m.reference, m.usage, m.present) for m in iod.modules),
            f"Table A.1-{number}. Modules of the {iod.title} objects the node creates",
        ),
        table(
            ("Attribute", "Tag", "Value"),
            ((k, _tag(k), v) for k, v in iod.attributes),
            f"Table A.1-{number}b. Attributes specific to {kind}",
        ),
    )


def _created(doc: Doc, facts: Facts) -> None:
    doc.annex(2, "A.1", "IOD Contents of Created Objects")
    kinds = ", ".join(f"`{k.name}`" for k in facts.result_kinds)
    default = " + ".join(f"`{k}`" for k in facts.default_results)
    doc.add(
        f"The node creates the result kinds {kinds}; each destination's `results` setting "
        f"says which it receives (default {default}). Every object is a new instance in a "
        "new series of the source study, has passed a round trip through its encoding and "
        "an IOD check, and is written in "
        f"{uid_name(CREATED_TRANSFER_SYNTAX)} ({uid(CREATED_TRANSFER_SYNTAX)}). UIDs "
        f"derive from the job under the root {uid(facts.uid_root.rstrip('.'))}, so "
        "encoding or sending a job again gives the same instances. When later data makes "
        "a model run again (a revision), its objects get new UIDs and Series Numbers "
        f"(ten per revision; revisions from {facts.numbered_revisions} on share the last "
        "block) and say `revised <n>` in their Series Description.",
        table(
            ("Kind", "SOP Classes", "Series offset", "What it is"),
            (
                (
                    k.name,
                    ", ".join(uid(u) for u in k.sop_class_uids),
                    f"+{k.series_offset}",
                    k.description,
                )
                for k in facts.result_kinds
            ),
            "Table A.1-1. Result kinds",
        ),
        "Attributes every created object carries:",
        table(
            ("Attribute", "Tag", "Value"),
            ((k, _tag(k), v.format(manufacturer=facts.manufacturer)) for k, v in COMMON),
            "Table A.1-2. Attributes common to all created objects",
        ),
    )
    for number, kind in enumerate((k.name for k in facts.result_kinds), start=3):
        if kind not in IODS:
            raise KeyError(f"result kind {kind} has no IOD in scripts/conformance/iods.py")
        _iod(doc, facts, number, kind, IODS[kind])


def _terminology(doc: Doc, facts: Facts) -> None:
    doc.annex(2, "A.3", "Coded Terminology and Templates")
    doc.add(
        "Templates used in the created objects (PS3.16):",
        table(
            ("Template", "Name", "Used in"),
            [
                ("TID 1500", "Measurement Report", "SR, the root of each document"),
                (
                    "TID 1001/1002/1004",
                    "Observation Context, Observer Context, Device Observer",
                    "SR: the model as device observer",
                ),
                (
                    "TID 1410",
                    "Planar ROI Measurements and Qualitative Evaluations",
                    "Measurement SR: one group per label with geometry",
                ),
                (
                    "TID 1501",
                    "Measurement and Qualitative Evaluation Group",
                    "Findings SR: quality issues, measurements without geometry",
                ),
                ("TID 1419", "ROI Measurements (Finding Site)", "SR: where a label lies"),
                ("TID 300", "Measurement", "SR: numeric values with UCUM units"),
                ("TID 4019", "Algorithm Identification", "SEG segments and SR groups"),
                ("TID 2010", "Key Object Selection", "KOS"),
            ],
            "Table A.3-1. Templates",
        ),
        "Procedure Reported (CID 100) in the SR, by the source's Modality (any other "
        "modality: 363679005, SCT, Imaging procedure):",
        table(
            ("Modality", "Code Value", "Scheme", "Code Meaning"),
            ((m, *code) for m, code in facts.procedures),
            "Table A.3-2. Procedure Reported",
        ),
        "Segment categories and types, finding sites and measurement concepts come from "
        "each model's manifest (`models/<name>/model.toml`), which names SNOMED CT, DCM "
        "or LOINC codes; units are UCUM. The Algorithm Family is a DCM code of CID 7162 "
        "(e.g. 123110, Artificial Intelligence). Quality findings use Imaging Series "
        "Quality with the DCM codes of usable-below-standard and unusable quality.",
    )


def _audit_codes(facts: Facts) -> str:
    def cid(value: str) -> str:
        if not value.isdigit() or len(value) < 6:
            return "RFC 3881"
        number = int(value)
        return (
            "CID 400" if number < 110120 else "CID 401" if number < 110150 else
            "CID 402" if number < 110180 else "CID 404"
        )  # fmt: skip

    return table(
        ("Code Value", "Scheme", "Code Meaning", "Context Group"),
        ((c.value, c.scheme, c.meaning, cid(c.value)) for c in facts.audit_codes),
        "Table 7.3-2. Coded values in the audit messages",
    )


def audit_tables(facts: Facts) -> list[str]:
    """The audit events table and the table of codes (used by section 7)."""
    events = [c for c in facts.audit_codes if c.value in AUDIT_TRIGGERS]
    unknown = [c for c in facts.audit_codes if c.value.startswith("1101") and int(c.value) < 110120]
    missing = {c.value for c in unknown} - AUDIT_TRIGGERS.keys()
    if missing:
        raise KeyError(f"audit event IDs {sorted(missing)} have no trigger in annexes.py")
    return [
        table(
            ("Audit Event ID", "Meaning", "Written when"),
            ((f"{c.value}, {c.scheme}", c.meaning, AUDIT_TRIGGERS[c.value]) for c in events),
            "Table 7.3-1. Audit events",
        ),
        _audit_codes(facts),
    ]


def annexes(doc: Doc, facts: Facts) -> None:
    """Section 8: created objects, private attributes, terminology, display, extensions."""
    doc.heading(1, "Annexes")
    doc.add("The annexes are numbered A.1 to A.6 as in PS3.2 Annex A (section 8 there).")
    _created(doc, facts)
    doc.annex(2, "A.2", "Data Dictionary of Private Attributes")
    doc.add("The node creates no private attributes. It keeps those it receives unchanged.")
    _terminology(doc, facts)
    doc.annex(2, "A.4", "Grayscale Image Consistency")
    doc.add(
        "The node does not support the Grayscale Standard Display Function (PS3.14) and "
        "displays no images for diagnosis. The previews of its web screens are for the "
        "operator only. Its Grayscale Softcopy Presentation States leave the grayscale "
        "rendering of the source images to the viewer."
    )
    doc.annex(2, "A.5", "Standard Extended / Specialized / Private SOP Classes")
    doc.add("None.")
    doc.annex(2, "A.6", "Private Transfer Syntaxes")
    doc.add("None.")
