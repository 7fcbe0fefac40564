"""Encode: the Encapsulated PDF report (PS3.3 A.45.1) of a CT series, an MR series and one
radiograph: valid, readable, deterministic, and without the patient's name, ID or birth date."""

from __future__ import annotations

import base64
import re
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import ModelOutput, QualityIssue
from dicom_ai_node.encode import result_series_number, to_bytes, validate_roundtrip
from dicom_ai_node.encode.common import EncodeContext
from dicom_ai_node.encode.keyimages import CAPTION, measurement_line
from dicom_ai_node.encode.pdf import build_pdf_report
from dicom_ai_node.errors import EncodeError
from dicom_ai_node.testing.series import phi_canaries_in

from ..tools import dciodvfy_errors
from .encode_cases import ALGORITHM, WHEN, Case, phantom_cases

PDF_UID = "1.2.840.10008.5.1.4.1.1.104.1"
CARD = "Intended use: research on phantoms.\n\nLimits: not validated on patients."


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    issues = (QualityIssue("slice_spacing", "uneven slice spacing", blocking=False),)
    return phantom_cases(
        (20, 64, (5.0, 5.0, 5.0)), (8, 64), 128, voxels_per_ml=97, quality_issues=issues
    )


def picture(seed: int = 0) -> npt.NDArray[np.uint8]:
    rgb = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    rgb[10:20, 10:30] = (255, 0, 0)
    return rgb


def context(source: list[Dataset], key: str = "job-1") -> EncodeContext:
    return EncodeContext(source, ALGORITHM, key, 9001, WHEN)


def build(c: Case, pictures: int = 1, key: str = "job-1") -> Dataset:
    pics = [picture(i) for i in range(pictures)]
    return validate_roundtrip(build_pdf_report(context(c.source, key), c.output, pics, CARD))


def pdf_text(document: bytes) -> str:
    """The strings a PDF shows (Tj operands of its content streams), one per line."""
    assert document.startswith(b"%PDF-")
    shown: list[str] = []
    for match in re.finditer(rb"<<(.*?)>>\s*stream\r?\n(.*?)endstream", document, re.S):
        head, data = match.groups()
        if b"/Subtype /Image" in head:
            continue
        if b"/ASCII85Decode" in head:
            data = base64.a85decode(data.strip().removesuffix(b"~>"))
        if b"/FlateDecode" in head:
            data = zlib.decompress(data)
        for text in re.findall(rb"\(((?:\\.|[^\\)])*)\) Tj", data):
            unescaped = re.sub(rb"\\([()\\])", rb"\1", text)
            octal = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), unescaped)
            shown.append(octal.decode("cp1252"))
    return "\n".join(shown)


def document_of(ds: Dataset) -> bytes:
    data = bytes(ds.EncapsulatedDocument)
    return data[: int(ds.EncapsulatedDocumentLength)]


@pytest.mark.interop
@pytest.mark.parametrize("name", ["CT", "MR", "CR"])
def test_pdf_passes_dciodvfy(cases: dict[str, Case], name: str, tmp_path: Path) -> None:
    path = tmp_path / "pdf.dcm"
    path.write_bytes(to_bytes(build(cases[name], pictures=1 if name != "MR" else 0)))
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("name", ["CT", "MR", "CR"])
def test_pdf_names_model_findings_and_measurements_not_the_patient(
    cases: dict[str, Case], name: str
) -> None:
    c = cases[name]
    ds = build(c)
    text = pdf_text(document_of(ds))
    assert "ct-chest-lungs 1.0.0" in text
    assert CAPTION in text
    for m in c.output.measurements:
        assert measurement_line(m).split()[1] in text  # the value as the key images write it
    for label in c.output.labels:
        assert label.name in text
    assert "uneven slice spacing" in text and "not validated on patients" in text
    assert c.source[0].StudyInstanceUID in text and c.source[0].AccessionNumber in text
    assert phi_canaries_in(text) == []
    assert phi_canaries_in(str(c.source[0].PatientName)) != []  # the source has them
    assert ds.PatientID == c.source[0].PatientID  # the DICOM header carries the patient


def test_pdf_text_helper_sees_what_is_there(cases: dict[str, Case]) -> None:
    """The extractor finds a name put into the card, so the PHI check above can fail."""
    c = cases["CR"]
    name = str(c.source[0].PatientName)
    ds = build_pdf_report(context(c.source), c.output, [], f"{CARD} {name}")
    assert phi_canaries_in(pdf_text(document_of(ds))) != []


def test_dicom_attributes_of_the_report(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    ds = build(c)
    src = c.source[0]
    assert (ds.SOPClassUID, ds.Modality) == (PDF_UID, "DOC")
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.BurnedInAnnotation == "YES"
    assert (ds.SeriesNumber, ds.SeriesDescription) == (9007, "AI ct-chest-lungs 1.0.0 PDF")
    assert "ct-chest-lungs 1.0.0" in ds.DocumentTitle
    code = ds.ConceptNameCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("18748-4", "LN")
    assert (ds.StudyInstanceUID, ds.PatientName) == (src.StudyInstanceUID, src.PatientName)
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert (ds.ContentDate, ds.InstanceCreationDate) == ("20260102", "20260102")
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions) == (
        "dicom-ai-node",
        "ct-chest-lungs",
        "1.0.0",
    )
    assert ds.DeviceUID == ALGORITHM.device_uid
    assert [x.ManufacturerModelName for x in ds.ContributingEquipmentSequence] == ["ct-chest-lungs"]
    references = {x.ReferencedSOPInstanceUID for x in ds.SourceInstanceSequence}
    assert references == {x.SOPInstanceUID for x in c.source}
    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert document_of(ds).rstrip().endswith(b"%%EOF")


def test_same_inputs_give_the_same_bytes(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    first = build(c, pictures=2)
    assert to_bytes(first) == to_bytes(build(c, pictures=2))
    assert b"D:20260102030405" in document_of(first)  # the job's time, not the clock
    other = build(c, pictures=2, key="job-2")
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID


def test_pictures_are_embedded(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    none, two = document_of(build(c, pictures=0)), document_of(build(c, pictures=2))
    images = re.compile(rb"/Subtype /Image.*?/Width 64", re.S)
    assert len(images.findall(none)) == 0
    assert len(images.findall(two)) == 2
    assert "Key image 2" in pdf_text(two) and "Key image" not in pdf_text(none)
    with pytest.raises(EncodeError):
        build_pdf_report(context(c.source), c.output, [np.zeros((8, 8), np.uint8)], CARD)


def test_a_revision_has_its_own_series_and_title(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    first = build(c)
    ctx = EncodeContext(
        c.source, ALGORITHM, "job-r1", result_series_number(9001, 1), WHEN, 1, (first,)
    )
    revised = build_pdf_report(ctx, c.output, [], CARD)
    assert revised.SeriesNumber == 9017
    assert revised.SeriesDescription == "AI ct-chest-lungs 1.0.0 PDF revised 1"
    assert revised.DocumentTitle.endswith("revised 1")
    assert "revised 1" in pdf_text(document_of(revised))
    assert revised.SOPInstanceUID != first.SOPInstanceUID


def test_output_without_label_map(cases: dict[str, Case]) -> None:
    c = cases["CR"]
    output = ModelOutput(labels=c.output.labels, measurements=c.output.measurements)
    text = pdf_text(document_of(build_pdf_report(context(c.source), output, [], CARD)))
    assert (
        "no segmentation" in text and measurement_line(c.output.measurements[0]).split()[1] in text
    )
