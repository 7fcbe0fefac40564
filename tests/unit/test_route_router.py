"""route_series / route_study decisions and the explain text, end to end on synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicom_ai_node.domain import BodyPart, InputSpec, Scope, SeriesInfo
from dicom_ai_node.route import (
    RouteDecision,
    format_study_routing,
    header_of,
    load_rules,
    route_series,
    route_study,
    series_info,
)
from dicom_ai_node.testing.series import make_ct_series

from ..model_gate import built_in_models

REPO = Path(__file__).resolve().parents[2]
CT = "1.2.840.10008.5.1.4.1.1.2"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LUNGS = "ct-chest-lungs"
KIDNEYS = "ct-kidney-tumour"
SPECS = {
    LUNGS: InputSpec(
        modalities=frozenset({"CT"}),
        body_parts=frozenset({BodyPart.CHEST}),
        sop_class_uids=frozenset({CT}),
        min_slices=20,
        slice_thickness_mm=(0.5, 5.0),
        require_axial=True,
        require_original=True,
        require_pixel_spacing=True,
    )
}


@pytest.fixture(scope="module")
def rules() -> Any:
    return load_rules(REPO / "models" / "rules.yaml", built_in_models())


def series(uid: str, number: int, **kwargs: Any) -> SeriesInfo:
    base: dict[str, Any] = dict(
        study_instance_uid="1.2.3",
        series_instance_uid=uid,
        modality="CT",
        sop_class_uids=frozenset({CT}),
        number_of_instances=200,
        body_part_examined="CHEST",
        series_description=f"THORAX {uid}",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        slice_thickness=2.5,
        pixel_spacing=(0.7, 0.7),
        image_orientation_patient=AXIAL,
        header={"SeriesNumber": number},
    )
    base.update(kwargs)
    return SeriesInfo(**base)


def test_synthetic_ct_series_goes_to_the_lung_model(rules: Any) -> None:
    _, datasets = make_ct_series(slices=30, rows=32, columns=32)
    info = series_info(
        header_of(datasets[0]),
        number_of_instances=len(datasets),
        sop_class_uids={ds.SOPClassUID for ds in datasets},
        calling_ae_title="CT_SCANNER",
    )
    decision = route_series(info, rules, SPECS)
    assert decision.routed, decision.explanation
    assert decision.models == (LUNGS,)
    assert decision.reason == f"routed to {LUNGS}"
    assert decision.body_part.source == "BodyPartExamined"
    assert decision.explanation[:2] == (
        f"rule 'chest-ct-lungs' -> {LUNGS}: matched (all 5 conditions hold); "
        "input spec accepts the series",
        f"rule 'abdomen-ct-kidneys' -> {KIDNEYS}: no match: "
        "body_part 'CHEST' is not one of [ABDOMEN]",
    )
    # every other rule of the default file says why it does not match: the other CT rule
    # (head CTA) its body part, the rest their modality first
    others = decision.explanation[2:]
    assert len(others) == len(rules.rules) - 2, others
    assert all(
        ": no match: modality 'CT' is not" in line
        or line.startswith("rule 'head-cta-aneurysm' -> cta-aneurysm: no match: body_part")
        for line in others
    ), others


def test_synthetic_series_without_body_part_uses_the_description(rules: Any) -> None:
    _, datasets = make_ct_series(
        slices=30, rows=32, columns=32, body_part_examined=None, series_description="Lunge 1mm"
    )
    info = series_info(header_of(datasets[0]), number_of_instances=30, sop_class_uids=[CT])
    decision = route_series(info, rules, SPECS)
    assert decision.models == (LUNGS,)
    assert decision.body_part.source == "SeriesDescription"


def test_non_axial_series_fails_the_axial_condition(rules: Any) -> None:
    coronal = series("1.1", 2, image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    decision = route_series(coronal, rules, SPECS)
    assert decision.reason == (
        "no rule matched: 'chest-ct-lungs': axial is false, not true; "
        "'abdomen-ct-kidneys': body_part 'CHEST' is not one of [ABDOMEN]; "
        f"'head-cta-aneurysm': body_part 'CHEST' is not one of [HEAD] "
        f"(and {len(rules.rules) - 3} more)"
    )


def test_rule_matches_but_spec_refuses(rules: Any) -> None:
    decision = route_series(series("1.1", 2, number_of_instances=5), rules, SPECS)
    assert not decision.routed
    assert "matched" in decision.explanation[0]
    assert (
        "does not accept the series: 5 slices, fewer than the minimum 20"
        in (decision.explanation[0])
    )
    assert decision.reason.startswith("rule 'chest-ct-lungs' matched but model ct-chest-lungs")


def test_no_rule_matched_reason(rules: Any) -> None:
    decision = route_series(
        series("1.1", 2, modality="MR", body_part_examined="HEAD"), rules, SPECS
    )
    assert not decision.routed
    assert decision.reason.startswith("no rule matched: 'chest-ct-lungs': modality 'MR' is not")
    assert "body_part 'HEAD' is not one of [CHEST]" in decision.explanation[0]


def test_no_rules_configured() -> None:
    empty = load_rules("rules: []\n", {LUNGS})
    decision = route_series(series("1.1", 2), empty, SPECS)
    assert decision.reason == "no routing rules are configured"


def test_model_without_spec_is_routed_and_says_so() -> None:
    anything = load_rules("rules:\n  - {name: all, model: m, when: {modality: CT}}\n", {"m"})
    decision = route_series(series("1.1", 2), anything, {})
    assert decision.models == ("m",)
    assert "model declares no input" in decision.explanation[0]


def test_several_models_in_rule_order() -> None:
    text = (
        "rules:\n"
        "  - {name: b-rule, model: b, when: {modality: CT}}\n"
        "  - {name: a-rule, model: a, when: {body_part: CHEST}}\n"
        "  - {name: b-again, model: b, when: {}}\n"
    )
    decision = route_series(series("1.1", 2), load_rules(text, {"a", "b"}), {})
    assert decision.models == ("b", "a")
    assert len(decision.explanation) == 3


def test_route_series_is_deterministic(rules: Any) -> None:
    info = series("1.1", 2)
    first: RouteDecision = route_series(info, rules, SPECS)
    assert route_series(info, rules, SPECS) == first


def test_classifier_hook_reaches_the_rules(rules: Any) -> None:
    conflicted = series("1.1", 2, body_part_examined="HEAD", series_description="CT THORAX")
    assert not route_series(conflicted, rules, SPECS).routed

    def classifier(info: SeriesInfo) -> tuple[BodyPart, float] | None:
        return BodyPart.CHEST, 0.99

    decision = route_series(conflicted, rules, SPECS, classifier)
    assert decision.routed
    assert decision.body_part.source == "image classifier"


def study(rules: Any) -> Any:
    scout = series(
        "1.1",
        1,
        number_of_instances=2,
        series_description="Topogram 0.6 T20f",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    thick = series("1.2", 2, slice_thickness=5.0, number_of_instances=80)
    thin = series("1.3", 3, slice_thickness=1.0, number_of_instances=400)
    mpr = series(
        "1.4", 4, image_type=("DERIVED", "SECONDARY", "MPR"), image_orientation_patient=None
    )
    other = series("9.1", 2, study_instance_uid="9", slice_thickness=3.0)
    return route_study([mpr, thick, other, thin, scout], rules, SPECS)


def test_route_study_chooses_one_series_per_model_and_explains_the_others(rules: Any) -> None:
    routing = study(rules)
    assert routing.study_instance_uids == ("1.2.3", "9")
    assert [s.info.series_instance_uid for s in routing.series] == [
        "1.1",
        "1.2",
        "1.3",
        "1.4",
        "9.1",
    ]
    assert [
        (a.model, a.study_instance_uid, a.series_instance_uids) for a in routing.assignments
    ] == [
        (LUNGS, "1.2.3", ("1.3",)),
        (LUNGS, "9", ("9.1",)),
    ]
    assert routing.for_series("1.3").models == (LUNGS,)
    thick = routing.for_series("1.2")
    assert not thick.routed and thick.decision.routed
    assert thick.reason == (
        f"a better series was chosen for model {LUNGS}: 1.3: thinner slices (1 mm vs 5 mm)"
    )
    assert "excluded by unless" in routing.for_series("1.1").reason
    assert "ImageType" in routing.for_series("1.4").reason
    with pytest.raises(KeyError):
        routing.for_series("nope")


def test_study_scope_model_takes_every_accepted_series() -> None:
    rules = load_rules("rules:\n  - {name: all-ct, model: s, when: {modality: CT}}\n", {"s"})
    routing = route_study(
        [series("1.1", 1), series("1.2", 2), series("1.3", 3, modality="MR")],
        rules,
        {"s": InputSpec(scope=Scope.STUDY)},
    )
    (assignment,) = routing.assignments
    assert assignment.scope is Scope.STUDY
    assert assignment.series_instance_uids == ("1.1", "1.2")
    assert routing.for_series("1.1").routed and routing.for_series("1.2").routed
    assert not routing.for_series("1.3").routed


def test_explain_text(rules: Any) -> None:
    text = format_study_routing(study(rules))
    assert "Study 1.2.3  (4 series)" in text
    assert "Series 1.3  #3  CT  'THORAX 1.3'  400 slices" in text
    assert "body part: CHEST from BodyPartExamined 'CHEST' (PS3.16 Annex L)" in text
    assert f"-> {LUNGS}" in text
    assert f"chosen for model {LUNGS} (best of 2 accepted series)" in text
    assert f"-> not routed: a better series was chosen for model {LUNGS}: 1.3" in text
    assert "rule 'chest-ct-lungs' -> ct-chest-lungs: excluded by unless: SeriesDescription" in text
    when = "best series of the study: one job per study, when the study is quiet"
    assert f"    {LUNGS} ({when}): 1.3\n      chosen 1.3 (#3 'THORAX 1.3')" in text
    assert "      preferred over 1.2 (#2 'THORAX 1.2'): thinner slices" in text
    assert text.count("Jobs:") == 2
    assert format_study_routing(route_study([], rules, SPECS)) == "No series.\n"
