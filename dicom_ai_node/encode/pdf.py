"""Encode: the result as a PDF report in an Encapsulated PDF object (PS3.3 A.45.1).

For PACS that show documents but neither SEG, SR nor presentation states: one page (or
more) with the model and its "not for diagnosis" warning, the study and series it read
(no patient name, ID or birth date in the PDF), the findings, a table of measurements,
the quality issues, the model card's summary and the key-slice pictures with outlines
burned in (made by :func:`dicom_ai_node.encode.keyimages.burned_in`).

The PDF is made in memory by ReportLab (BSD licence) in its invariant mode, with the
creation date set to the job's content date: the same inputs give the same bytes. The
DICOM object around it is built on highdicom's :class:`highdicom.SOPClass` (patient and
study copied from the source by the IOD's module table); highdicom has no constructor
for this IOD, so the Encapsulated Document module is filled here with pydicom.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from xml.sax.saxutils import escape

import highdicom as hd
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.styles import getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import cm  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from ..domain import Measurement, ModelOutput
from ..errors import EncodeError
from ..picture import UNIT_SYMBOLS, number_text
from .common import EncodeContext, finish
from .keyimages import CAPTION
from .seg import check_label_map
from .uids import result_uid
from .validate import validate_roundtrip

__all__ = ["REPORT_TITLE_CODE", "build_pdf_report", "pdf_bytes"]

#: Concept Name of the document (PS3.16 CID 7001): LOINC 18748-4.
REPORT_TITLE_CODE = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic Imaging Report")
#: Study and series attributes the report names; never the patient's.
_IDENTIFICATION = (
    ("Study date", "StudyDate"),
    ("Study description", "StudyDescription"),
    ("Accession number", "AccessionNumber"),
    ("Modality", "Modality"),
    ("Series", "SeriesDescription"),
    ("Series number", "SeriesNumber"),
    ("Study Instance UID", "StudyInstanceUID"),
    ("Series Instance UID", "SeriesInstanceUID"),
)
_PICTURE_BOX_CM = (17.0, 12.0)


def _text(value: object) -> str:
    """Text for a standard PDF font (WinAnsi) in ReportLab's markup: others become '?'."""
    plain = str(value).encode("cp1252", errors="replace").decode("cp1252")
    return escape(re.sub(r"[\x00-\x08\x0b-\x1f]", " ", plain))


def _table(rows: Sequence[Sequence[str]], widths: Sequence[float]) -> Table:
    table = Table([[_text(c) for c in row] for row in rows], colWidths=list(widths), repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTSIZE", (0, 0), (-1, -1), 9),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


def _picture(picture: npt.NDArray[np.uint8]) -> Image:
    """A key-slice picture (rows x columns x 3, uint8) as a flowable, fitted to the page."""
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise EncodeError(f"a picture must be rows x columns x 3 uint8, not {picture.shape}")
    buffer = io.BytesIO()
    PILImage.fromarray(picture, "RGB").save(buffer, format="PNG", optimize=False)
    buffer.seek(0)
    rows, cols = picture.shape[:2]
    scale = min(_PICTURE_BOX_CM[0] * cm / cols, _PICTURE_BOX_CM[1] * cm / rows)
    return Image(buffer, width=cols * scale, height=rows * scale)


def _story(
    ctx: EncodeContext,
    output: ModelOutput,
    pictures: Sequence[npt.NDArray[np.uint8]],
    card_summary: str,
) -> list[object]:
    """The report's content, top to bottom."""
    styles = getSampleStyleSheet()
    body, heading = styles["BodyText"], styles["Heading2"]
    name = f"{ctx.algorithm.name} {ctx.algorithm.version}"
    story: list[object] = [
        Paragraph(_text(f"AI result: {name}"), styles["Title"]),
        Paragraph(f'<font color="red"><b>{_text(CAPTION)}</b></font>', styles["Heading3"]),
        Paragraph(_text(ctx.series_description("report")), body),
        Paragraph("Study", heading),
    ]
    src = ctx.source[0]
    rows = [["", ""]] + [[title, str(src.get(k, "") or "")] for title, k in _IDENTIFICATION]
    rows.append(["Report date", ctx.content_datetime.strftime("%Y-%m-%d %H:%M:%S")])
    story.append(_table(rows[1:], [5 * cm, 12 * cm]))
    story += [Paragraph("Findings", heading), *_findings(output, body)]
    story.append(Paragraph("Measurements", heading))
    labels = {x.value: x.name for x in output.labels}
    measured = [["Label", "Measurement", "Value", "Unit"]] + [
        [labels.get(m.label_value, str(m.label_value)), m.concept.meaning, *_value_unit(m)]
        for m in output.measurements
    ]
    if len(measured) > 1:
        story.append(_table(measured, [4.5 * cm, 6 * cm, 3.5 * cm, 3 * cm]))
    else:
        story.append(Paragraph("No measurements.", body))
    story.append(Paragraph("Quality", heading))
    issues = [
        f"{'Blocking' if q.blocking else 'Warning'}: {q.check}: {q.message}"
        for q in output.quality_issues
    ]
    story += [Paragraph(_text(t), body) for t in issues or ["No quality issues found."]]
    story.append(Paragraph("About the model", heading))
    for part in re.split(r"\n\s*\n", card_summary.strip()) or [""]:
        story.append(Paragraph(_text(part).replace("\n", "<br/>"), body))
    for number, picture in enumerate(pictures, start=1):
        title = [Paragraph("Key images", heading)] if number == 1 else []
        text = Paragraph(_text(f"Key image {number}: {CAPTION}"), body)
        story.append(KeepTogether([*title, _picture(picture), text, Spacer(1, 0.4 * cm)]))
    return story


def _value_unit(m: Measurement) -> list[str]:
    unit = UNIT_SYMBOLS.get(m.unit.value, m.unit.value)
    return [number_text(float(m.value)), "" if unit == "1" else unit]


def _findings(output: ModelOutput, style: object) -> list[Paragraph]:
    """One line per label that has voxels: its name, type and the slices it spans."""
    if output.label_map is None:
        return [Paragraph("The model makes no segmentation.", style)]
    lines = []
    for label in sorted(output.labels, key=lambda x: x.value):
        per_slice = (output.label_map == label.value).sum(axis=(1, 2))
        if per_slice.any():
            slices = np.flatnonzero(per_slice)
            where = f"image {slices[0] + 1}" if len(slices) == 1 else "images "
            where += "" if len(slices) == 1 else f"{slices[0] + 1} to {slices[-1] + 1}"
            kind = "" if label.type.meaning == label.name else f" ({label.type.meaning})"
            lines.append(f"{label.name}{kind}: {where}")
    return [Paragraph(_text(t), style) for t in lines or ["Nothing found."]]


def pdf_bytes(
    ctx: EncodeContext,
    output: ModelOutput,
    pictures: Sequence[npt.NDArray[np.uint8]],
    card_summary: str,
) -> bytes:
    """The report as PDF bytes, the same for the same inputs (ReportLab invariant mode).

    Its Creation and Modification Date are ``ctx.content_datetime`` (ISO 32000-1 14.3.3).
    """
    name = f"{ctx.algorithm.name} {ctx.algorithm.version}"
    stamp = ctx.content_datetime.strftime("D:%Y%m%d%H%M%S")

    def page(canvas: object, doc: object) -> None:
        canvas.setDateFormatter(lambda *_: stamp)  # type: ignore[attr-defined]
        canvas.saveState()  # type: ignore[attr-defined]
        canvas.setFont("Helvetica", 8)  # type: ignore[attr-defined]
        footer = f"{CAPTION} - {name} - page {doc.page}"  # type: ignore[attr-defined]
        canvas.drawString(2 * cm, 1.2 * cm, footer)  # type: ignore[attr-defined]
        canvas.restoreState()  # type: ignore[attr-defined]

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
        title=f"AI result {name}",
        author=ctx.algorithm.manufacturer,
        subject=CAPTION,
        creator=name,
        invariant=1,
    )
    doc.build(_story(ctx, output, pictures, card_summary), onFirstPage=page, onLaterPages=page)
    return buffer.getvalue()


def build_pdf_report(
    ctx: EncodeContext,
    output: ModelOutput,
    pictures: Sequence[npt.NDArray[np.uint8]],
    card_summary: str,
) -> Dataset:
    """Build the Encapsulated PDF report of a job (PS3.3 A.45.1, C.24.2).

    Parameters
    ----------
    ctx:
        The job's shared context; the report names its study and series.
    output:
        Findings (labels with voxels), measurements and quality issues.
    pictures:
        Key-slice pictures, rows x columns x 3 uint8, with outlines burned in; may be empty.
    card_summary:
        What the model card says about the model (intended use, limits), as plain text.

    Returns
    -------
    pydicom.Dataset
        The object (Series Number ``ctx.series_number`` + 6, Burned In Annotation YES:
        the PDF names the study), passed :func:`validate_roundtrip`.

    Raises
    ------
    EncodeError
        If the label map does not fit the source, a picture is not RGB, or the PDF
        cannot be made.
    """
    if output.label_map is not None:
        check_label_map(output, ctx.source)
    try:
        document = pdf_bytes(ctx, output, pictures, card_summary)
    except EncodeError:
        raise
    except Exception as exc:  # ReportLab raises many kinds; all mean "no PDF"
        raise EncodeError(f"cannot make the PDF report of job {ctx.job_key}: {exc}") from exc
    src = ctx.source[0]
    when = ctx.content_datetime
    ds = hd.SOPClass(
        study_instance_uid=src.StudyInstanceUID,
        **ctx.series_arguments("PDF"),
        sop_instance_uid=result_uid(ctx.job_key, "pdf", "instance"),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        content_date=when.date(),
        content_time=when.time(),
        specific_character_set="ISO_IR 192",
    )
    ds.copy_patient_and_study_information(src)
    ds.ContributingEquipmentSequence = ctx.equipment()
    ds.ConversionType = "WSD"  # SC Equipment (PS3.3 C.8.6.1): made on a workstation
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = ctx.series_description("report")
    ds.ConceptNameCodeSequence = [REPORT_TITLE_CODE]
    ds.VerificationFlag = "UNVERIFIED"
    ds.SourceInstanceSequence = [_reference(image) for image in ctx.source]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document + b"\0" * (len(document) % 2)  # OB: even length
    ds.EncapsulatedDocumentLength = len(document)
    finish(ds, ctx)
    validate_roundtrip(ds)
    return ds


def _reference(image: Dataset) -> Dataset:
    """An item of Source Instance Sequence (PS3.3 C.24.2.1): the report describes it."""
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item
