"""Body part normalisation: each source, multilingual keywords, conflicts, classifier hook."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_ai_node.domain import BodyPart, Code, SeriesInfo
from dicom_ai_node.route.bodypart import (
    SOURCES,
    BodyPartDecision,
    body_part_from_code,
    body_part_from_term,
    normalise_body_part,
    regions_in_text,
)

B = BodyPart


def info(**kwargs: Any) -> SeriesInfo:
    base: dict[str, Any] = dict(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        modality="CT",
        sop_class_uids=frozenset({"1.2.840.10008.5.1.4.1.1.2"}),
        number_of_instances=100,
    )
    base.update(kwargs)
    return SeriesInfo(**base)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CHEST", (B.CHEST,)),
        ("THORAX", (B.CHEST,)),
        ("LUNG", (B.CHEST,)),
        ("HEAD", (B.HEAD,)),
        ("BRAIN", (B.HEAD,)),
        ("SKULL", (B.HEAD,)),
        ("ABDOMEN", (B.ABDOMEN,)),
        ("PELVIS", (B.PELVIS,)),
        ("KNEE", (B.LOWER_EXTREMITY,)),
        ("CSPINE", (B.SPINE,)),
        ("C-SPINE", (B.SPINE,)),
        ("chest", (B.CHEST,)),
        ("CHESTABDPELVIS", (B.CHEST, B.ABDOMEN, B.PELVIS)),
        ("HEADNECK", (B.HEAD, B.NECK)),
        ("WHOLEBODY", (B.WHOLEBODY,)),
        ("NOT A TERM", ()),
    ],
)
def test_body_part_examined_terms(value: str, expected: tuple[BodyPart, ...]) -> None:
    assert body_part_from_term(value) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("816094009", B.CHEST),  # Thorax, current CID 4031
        ("43799004", B.CHEST),  # Chest (Annex L)
        ("51185008", B.CHEST),  # Thoracic structure, older objects
        ("69536005", B.HEAD),
        ("818981001", B.ABDOMEN),
        ("816092008", B.PELVIS),
        ("12921003", B.PELVIS),
        ("72696002", B.LOWER_EXTREMITY),
        ("T-D3000", B.CHEST),  # legacy SNOMED RT
    ],
)
def test_anatomic_region_codes(code: str, expected: BodyPart) -> None:
    assert body_part_from_code(code)[0] is expected


def test_codes_of_other_schemes_are_not_guessed() -> None:
    assert body_part_from_code("816094009", "LN") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT THORAX 2.5mm", B.CHEST),
        ("胸部CT平扫", B.CHEST),
        ("AX LUNG 1.25", B.CHEST),
        ("Lunge nativ", B.CHEST),
        ("Lungenembolie", B.CHEST),
        ("poumons", B.CHEST),
        ("Thorax", B.CHEST),
        ("thoracique", B.CHEST),
        ("CT_THORAX_1.0_B60f", B.CHEST),
        ("ＣＴ　胸部", B.CHEST),  # full-width forms
        ("Schädel nativ", B.HEAD),
        ("SCHAEDEL", B.HEAD),
        ("crâne", B.HEAD),
        ("CRANE", B.HEAD),
        ("头颅CT", B.HEAD),
        ("頭部", B.HEAD),
        ("腹部增强", B.ABDOMEN),
        ("Abdomen", B.ABDOMEN),
        ("bassin", B.PELVIS),
        ("Becken", B.PELVIS),
        ("盆腔", B.PELVIS),
        ("knee", B.LOWER_EXTREMITY),
        ("Knie links", B.LOWER_EXTREMITY),
        ("genou droit", B.LOWER_EXTREMITY),
        ("膝关节", B.LOWER_EXTREMITY),
        ("thoracic spine", B.SPINE),  # longer keyword beats "thorac"
        ("Halswirbelsäule", B.SPINE),
        ("胸椎", B.SPINE),  # thoracic spine, not chest
    ],
)
def test_keywords_in_many_languages(text: str, expected: BodyPart) -> None:
    found = regions_in_text(text)
    assert found, text
    assert found[0][0] is expected


@pytest.mark.parametrize("text", ["forehead", "WARM", "Scout", "Topogram", "Darm", "Kalibrierung"])
def test_keywords_respect_word_boundaries(text: str) -> None:
    assert regions_in_text(text) == []


def test_word_boundary_picks_the_whole_word() -> None:
    # French "coude" (elbow) must not be read as "cou" (neck)
    assert [p for p, _ in regions_in_text("coude")] == [B.UPPER_EXTREMITY]


def test_several_regions_in_text_order() -> None:
    assert [p for p, _ in regions_in_text("CT Thorax/Abdomen")] == [B.CHEST, B.ABDOMEN]
    assert [p for p, _ in regions_in_text("胸腹部")] == [B.CHEST, B.ABDOMEN]


def test_from_body_part_examined() -> None:
    decision = normalise_body_part(info(body_part_examined="CHEST"))
    assert decision == BodyPartDecision(
        B.CHEST, "BodyPartExamined", decision.explanation, frozenset({B.CHEST})
    )
    assert "Annex L" in decision.explanation


def test_unknown_term_in_body_part_examined_falls_back_to_keywords() -> None:
    decision = normalise_body_part(info(body_part_examined="LUNGE"))
    assert (decision.body_part, decision.source) == (B.CHEST, "BodyPartExamined")


def test_from_anatomic_region_sequence() -> None:
    codes = (Code("816094009", "SCT", "Thorax"),)
    decision = normalise_body_part(info(anatomic_region_codes=codes))
    assert (decision.body_part, decision.source) == (B.CHEST, "AnatomicRegionSequence")
    assert "CID 4031" in decision.explanation


@pytest.mark.parametrize(
    ("field", "source"),
    [
        ("series_description", "SeriesDescription"),
        ("protocol_name", "ProtocolName"),
        ("study_description", "StudyDescription"),
    ],
)
def test_from_descriptions(field: str, source: str) -> None:
    decision = normalise_body_part(info(**{field: "CT 胸部"}))
    assert (decision.body_part, decision.source) == (B.CHEST, source)
    assert "胸部" in decision.explanation


def test_series_description_is_trusted_before_study_description() -> None:
    decision = normalise_body_part(
        info(study_description="CT THORAX ABDOMEN", series_description="Abdomen venös")
    )
    assert (decision.body_part, decision.source) == (B.ABDOMEN, "SeriesDescription")
    assert decision.conflicts == ()  # the study description names the abdomen too


def test_nothing_known_gives_unknown() -> None:
    decision = normalise_body_part(info(body_part_examined="XYZ", series_description="3D"))
    assert (decision.body_part, decision.source) == (B.UNKNOWN, "none")
    assert "XYZ" in decision.explanation


def test_combined_region_keeps_every_region() -> None:
    decision = normalise_body_part(info(body_part_examined="CHESTABDOMEN"))
    assert decision.body_part is B.CHEST
    assert decision.regions == {B.CHEST, B.ABDOMEN}


def test_conflict_is_reported_and_header_kept_without_classifier() -> None:
    decision = normalise_body_part(
        info(body_part_examined="HEAD", series_description="CT THORAX 1mm")
    )
    assert (decision.body_part, decision.source) == (B.HEAD, "BodyPartExamined")
    assert decision.conflicts == ("SeriesDescription",)
    assert "conflict" in decision.explanation and "CHEST" in decision.explanation


class FakeClassifier:
    def __init__(self, answer: tuple[BodyPart, float] | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, info: SeriesInfo) -> tuple[BodyPart, float] | None:
        self.calls += 1
        return self.answer


def test_classifier_settles_a_conflict() -> None:
    classifier = FakeClassifier((B.CHEST, 0.93))
    decision = normalise_body_part(
        info(body_part_examined="HEAD", series_description="Thorax"), classifier
    )
    assert (decision.body_part, decision.source) == (B.CHEST, "image classifier")
    assert decision.conflicts == ("SeriesDescription",)
    assert "0.93" in decision.explanation and "conflict" in decision.explanation


def test_unsure_classifier_leaves_the_header_decision() -> None:
    classifier = FakeClassifier((B.CHEST, 0.2))
    decision = normalise_body_part(
        info(body_part_examined="HEAD", series_description="Thorax"), classifier
    )
    assert decision.source == "BodyPartExamined"
    assert "image classifier undecided" in decision.explanation


def test_classifier_is_not_asked_when_headers_agree() -> None:
    classifier = FakeClassifier((B.HEAD, 1.0))
    decision = normalise_body_part(info(body_part_examined="CHEST"), classifier)
    assert decision.body_part is B.CHEST
    assert classifier.calls == 0


def test_classifier_is_asked_when_headers_are_silent() -> None:
    classifier = FakeClassifier((B.ABDOMEN, 0.8))
    decision = normalise_body_part(info(), classifier)
    assert (decision.body_part, decision.source) == (B.ABDOMEN, "image classifier")
    assert normalise_body_part(info(), FakeClassifier(None)).source == "none"


def test_decision_validates_its_source() -> None:
    assert "none" in SOURCES
    with pytest.raises(ValueError, match="unknown body part source"):
        BodyPartDecision(B.CHEST, "guess", "")
