"""Encode: the Key Object Selection document of a job's key images and SR reports, for a
CT volume, an MR series and a radiograph: valid (dciodvfy), every reference resolving to
an SC or SR made for the job, deterministic, and in its own series per revision."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.encode import encode_results, to_bytes
from dicom_ai_node.encode.kos import DOCUMENT_TITLE, build_kos
from dicom_ai_node.encode.sc import build_key_images
from dicom_ai_node.errors import EncodeError
from dicom_ai_node.testing.series import make_ct_series

from ..tools import dciodvfy_errors
from .encode_cases import CASES, Case
from .encode_cases import LATER as WHEN

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]()


def reports(case: Case, job_key: str = "job-1") -> list[Dataset]:
    results = encode_results(
        case.source, case.output, case.algorithm, job_key, content_datetime=WHEN
    )
    return [ds for ds in results if ds.Modality == "SR"]


def make(
    case: Case, job_key: str = "job-1", revision: int = 0, predecessors: Sequence[Dataset] = ()
) -> tuple[Dataset, list[Dataset]]:
    """The KOS of a job and the key images and reports it should reference."""
    ctx = case.context(job_key, revision, predecessors)
    images = build_key_images(ctx, case.output, case.pixels)
    srs = reports(case, job_key)
    return build_kos(ctx, images, srs), images + srs


def referenced(kos: Dataset) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(class, instance) pairs in the content tree and in the evidence sequence."""
    content = {
        (item.ReferencedSOPSequence[0].ReferencedSOPClassUID,
         item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for item in kos.ContentSequence
        if item.ValueType in ("IMAGE", "COMPOSITE")
    }  # fmt: skip
    evidence = {
        (sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID)
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    return content, evidence


def description_of(kos: Dataset) -> str:
    """The Key Object Description (113012, DCM) of TID 2010."""
    [text] = [
        item.TextValue
        for item in kos.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "113012"
    ]
    return str(text)


@pytest.mark.interop
def test_the_kos_passes_dciodvfy(case: Case, tmp_path: Path) -> None:
    kos, _ = make(case)
    path = tmp_path / "kos.dcm"
    path.write_bytes(to_bytes(kos))
    assert dciodvfy_errors(path) == []


def test_every_reference_resolves_to_a_key_image_or_report(case: Case) -> None:
    kos, objects = make(case)
    assert {ds.Modality for ds in objects} == {"OT", "SR"}
    made = {(ds.SOPClassUID, ds.SOPInstanceUID) for ds in objects}
    content, evidence = referenced(kos)
    assert content == evidence == made
    series = {
        series.SeriesInstanceUID: {
            sop.ReferencedSOPInstanceUID for sop in series.ReferencedSOPSequence
        }
        for series in kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    for ds in objects:
        assert ds.SOPInstanceUID in series[ds.SeriesInstanceUID]
    images = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
              for i in kos.ContentSequence if i.ValueType == "IMAGE"}  # fmt: skip
    assert images == {ds.SOPInstanceUID for ds in objects if ds.Modality == "OT"}


def test_the_kos_is_titled_and_names_the_model(case: Case) -> None:
    kos, objects = make(case)
    first = case.source[0]
    assert kos.SOPClassUID == KOS_CLASS and kos.Modality == "KO"
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == (
        DOCUMENT_TITLE.value,
        DOCUMENT_TITLE.scheme_designator,
    )
    text = description_of(kos)
    assert f"{case.algorithm.name} 1.2.0" in text and "not for diagnosis" in text
    uids = [item.get("UID") for item in kos.ContentSequence if item.ValueType == "UIDREF"]
    assert case.algorithm.device_uid in uids  # the device observer (TID 1004)
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
        assert kos[keyword].value == first[keyword].value, keyword
    assert kos.SeriesNumber == 9005 and kos.InstanceNumber == 1
    assert kos.SeriesDescription == f"AI {case.algorithm.name} 1.2.0 KOS"
    assert kos.DeviceUID == case.algorithm.device_uid
    assert kos.ManufacturerModelName == case.algorithm.name
    models = [e.get("ManufacturerModelName") for e in kos.ContributingEquipmentSequence]
    assert case.algorithm.name in models
    assert kos.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in objects}


def test_encoding_twice_gives_identical_bytes() -> None:
    case = CASES["ct"]()
    assert to_bytes(make(case)[0]) == to_bytes(make(case)[0])
    assert make(case, "job-2")[0].SOPInstanceUID != make(case)[0].SOPInstanceUID


def test_a_revision_has_its_own_series_and_says_so() -> None:
    case = CASES["cr"]()
    first, _ = make(case)
    [sr] = reports(case)
    revised, _ = make(case, "job-2", revision=1, predecessors=(sr,))
    assert revised.SeriesNumber == 9015
    assert revised.SeriesDescription == "AI chest-xr 1.2.0 KOS revised 1"
    text = description_of(revised)
    assert "revised 1" in text
    assert revised.SeriesInstanceUID != first.SeriesInstanceUID


def test_nothing_to_select_or_another_study_is_refused() -> None:
    case = CASES["cr"]()
    with pytest.raises(EncodeError, match="at least one"):
        build_kos(case.context(), [], [])
    elsewhere = make_ct_series(2, 16, 16, seed=9, study_instance_uid="1.2.3.4.5")[1]
    with pytest.raises(EncodeError, match="not in the source study"):
        build_kos(case.context(), [], elsewhere)
