"""Routing rules: loading, validation messages, and every matcher kind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dicom_ai_node.domain import BodyPart, SeriesInfo, SeriesSelection
from dicom_ai_node.route.bodypart import BodyPartDecision
from dicom_ai_node.route.conditions import (
    Condition,
    Contains,
    Equals,
    Glob,
    OneOf,
    Present,
    Range,
    Regex,
)
from dicom_ai_node.route.load import RulesError, load_rules, parse_rules
from dicom_ai_node.route.rules import RuleSet, rule_values

from ..model_gate import built_in_models

MODELS = {"ct-chest-lungs", "other-model"}
CT = "1.2.840.10008.5.1.4.1.1.2"
REPO = Path(__file__).resolve().parents[2]


def info(**kwargs: Any) -> SeriesInfo:
    base: dict[str, Any] = dict(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        modality="CT",
        sop_class_uids=frozenset({CT}),
        number_of_instances=120,
        calling_ae_title="PACS_MAIN",
        series_description="CT THORAX 1mm",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        slice_thickness=1.0,
        pixel_spacing=(0.7, 0.7),
        image_orientation_patient=(1, 0, 0, 0, 1, 0),
        header={"SeriesNumber": 3, "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]},
    )
    base.update(kwargs)
    return SeriesInfo(**base)


def one_rule(when: str, unless: str = "") -> RuleSet:
    text = f"rules:\n  - name: r\n    model: ct-chest-lungs\n    when:\n{when}"
    if unless:
        text += f"    unless:\n{unless}"
    return load_rules(text, MODELS)


def matches(rules: RuleSet, series: SeriesInfo, body_part: BodyPart = BodyPart.CHEST) -> bool:
    return rules.rules[0].evaluate(rule_values(series, body_part)).matched


EXAMPLE = """
rules:
  - name: chest-ct-lungs
    model: ct-chest-lungs
    when:
      modality: CT
      body_part: [CHEST]
      calling_ae_title: "PACS*"
      sop_class_uid: [1.2.840.10008.5.1.4.1.1.2]
      SeriesDescription: {regex: "(?i)lung|thorax"}
      SliceThickness: {min: 0.5, max: 5}
      ImageType: {contains: ORIGINAL}
    unless:
      SeriesDescription: {glob: "*SCOUT*"}
"""


def test_example_from_the_brief_loads_and_matches() -> None:
    rules = load_rules(EXAMPLE, MODELS)
    assert [r.name for r in rules] == ["chest-ct-lungs"]
    assert rules.models == {"ct-chest-lungs"}
    result = rules.rules[0].evaluate(rule_values(info(), BodyPart.CHEST))
    assert result.matched, result.explanation
    assert "all 7 conditions hold" in result.explanation


def test_failed_conditions_are_all_named() -> None:
    rules = load_rules(EXAMPLE, MODELS)
    series = info(modality="MR", slice_thickness=7.0)
    result = rules.rules[0].evaluate(rule_values(series, BodyPart.HEAD))
    assert not result.matched
    assert "modality 'MR' is not 'CT'" in result.explanation
    assert "body_part 'HEAD' is not one of [CHEST]" in result.explanation
    assert "SliceThickness '7' is not within [0.5, 5]" in result.explanation
    assert len(result.reasons) == 3


def test_unless_excludes() -> None:
    rules = load_rules(EXAMPLE, MODELS)
    result = rules.rules[0].evaluate(
        rule_values(info(series_description="THORAX SCOUT"), BodyPart.CHEST)
    )
    assert not result.matched
    assert "excluded by unless: SeriesDescription 'THORAX SCOUT' matches glob" in (
        result.explanation
    )


def test_load_from_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    rules = load_rules(path, MODELS)
    assert rules.source == str(path)


def test_default_rules_file_is_valid() -> None:
    built_in = built_in_models()
    assert {"ct-chest-lungs", "cxr-abnormal", "us-nodule", "mr-cine-lv"} <= built_in
    rules = load_rules(REPO / "models" / "rules.yaml", built_in)
    assert rules.models == built_in  # every built-in model has a rule
    assert matches(rules, info())
    assert not matches(rules, info(series_description="Topogram 0.6 T20f"))
    assert not matches(rules, info(image_type=("DERIVED", "SECONDARY", "MPR"), header={}))
    assert not matches(rules, info(image_orientation_patient=(1, 0, 0, 0, 0, -1)))  # coronal


# ----------------------------------------------------------------------------- matchers


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("      modality: ct\n", True),  # case-insensitive
        ("      modality: MR\n", False),
        ("      SeriesNumber: 3\n", True),  # numeric
        ("      SeriesNumber: 3.0\n", True),
        ("      SeriesNumber: 4\n", False),
        ("      ImageType: original\n", True),  # one of the values
        ('      ImageType: "ORIGINAL\\\\PRIMARY\\\\AXIAL"\n', True),  # the whole value
        ("      axial: true\n", True),
        ("      axial: false\n", False),
    ],
)
def test_scalar_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("      modality: [MR, CT]\n", True),
        ("      modality: [MR, PT]\n", False),
        ("      body_part: [chest, abdomen]\n", True),
        ("      sop_class_uid: [CTImageStorage]\n", True),  # keyword resolved to the UID
        ("      sop_class_uid: [1.2.840.10008.5.1.4.1.1.4]\n", False),
        ("      ImageType: [DERIVED, ORIGINAL]\n", True),
    ],
)
def test_list_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('      calling_ae_title: "PACS*"\n', True),  # C-FIND style wildcards
        ('      calling_ae_title: "pacs_?ain"\n', True),
        ('      calling_ae_title: "PACS"\n', False),
        ("      calling_ae_title: [MODALITY1, PACS*]\n", True),
        ('      sop_class_uid: "1.2.840.10008.5.1.4.1.1.2*"\n', True),
        ('      SeriesDescription: "CT [A] *"\n', False),  # brackets are literal here
    ],
)
def test_wildcards_in_plain_values(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


def test_body_part_list_accepts_any_region_of_a_combined_decision() -> None:
    decision = BodyPartDecision(
        BodyPart.CHEST, "BodyPartExamined", "", frozenset({BodyPart.CHEST, BodyPart.ABDOMEN})
    )
    rules = one_rule("      body_part: ABDOMEN\n")
    assert rules.rules[0].evaluate(rule_values(info(), decision)).matched


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('      calling_ae_title: {glob: "pacs*"}\n', True),
        ('      calling_ae_title: {glob: "PACS_?AIN"}\n', True),
        ('      calling_ae_title: {glob: "MODALITY*"}\n', False),
        ('      ImageType: {glob: "ORIGINAL*"}\n', True),
    ],
)
def test_glob_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('      SeriesDescription: {regex: "(?i)lung|thorax"}\n', True),
        ('      SeriesDescription: {regex: "thorax"}\n', False),  # case-sensitive by default
        ('      SeriesDescription: {regex: "^CT .* [0-9]mm$"}\n', True),
    ],
)
def test_regex_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("      SliceThickness: {min: 0.5, max: 5}\n", True),
        ("      SliceThickness: {min: 2}\n", False),
        ("      SliceThickness: {max: 1}\n", True),  # inclusive
        ("      PixelSpacing: {min: 0.5, max: 1.0}\n", True),  # every value
        ("      PixelSpacing: {max: 0.6}\n", False),
        ("      number_of_slices: {min: 100}\n", True),
        ("      SeriesDescription: {min: 1}\n", False),  # not a number
    ],
)
def test_range_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("      ImageType: {contains: ORIGINAL}\n", True),
        ("      ImageType: {contains: [original, axial]}\n", True),
        ("      ImageType: {contains: LOCALIZER}\n", False),
        ("      ImageType: {contains: [ORIGINAL, LOCALIZER]}\n", False),
    ],
)
def test_contains_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("      SeriesDescription: {present: true}\n", True),
        ("      ProtocolName: {present: true}\n", False),
        ("      ProtocolName: {present: false}\n", True),
        ("      ProtocolName: CHEST\n", False),  # absent value never equals anything
    ],
)
def test_present_matcher(condition: str, expected: bool) -> None:
    assert matches(one_rule(condition), info()) is expected


def test_matcher_objects_directly() -> None:
    values = {"K": ("ORIGINAL", "PRIMARY")}
    assert Condition("K", Equals("original")).check(values)[0]
    assert Condition("K", OneOf(("X", "PRIMARY"))).check(values)[0]
    assert Condition("K", Glob("ORIG*")).check(values)[0]
    assert Condition("K", Contains(("PRIMARY",))).check(values)[0]
    assert Condition("K", Present(True)).check(values)[0]
    assert not Condition("K", Range(0, 1)).check(values)[0]
    assert Condition("N", Present(False)).check(values) == (True, "N is absent")
    regex = Regex("P.IMARY", __import__("re").compile("P.IMARY"))
    assert Condition("K", regex).check(values)[0]


def test_disabled_rule_never_matches() -> None:
    text = "rules:\n  - {name: r, model: ct-chest-lungs, enabled: false, when: {}}\n"
    rules = load_rules(text, MODELS)
    result = rules.rules[0].evaluate(rule_values(info(), BodyPart.CHEST))
    assert not result.matched and "disabled" in result.explanation
    assert rules.models == frozenset()


def test_empty_when_matches_everything() -> None:
    rules = load_rules("rules:\n  - {name: all, model: other-model, when: {}}\n", MODELS)
    assert matches(rules, info())


# --------------------------------------------------------------------------- validation


def rules_error(text: str) -> str:
    with pytest.raises(RulesError) as excinfo:
        load_rules(text, MODELS)
    return str(excinfo.value)


def test_select_is_best_by_default_each_when_asked_and_agrees_per_model() -> None:
    rules = load_rules(
        "rules:\n  - {name: a, model: other-model, when: {}}\n"
        "  - {name: b, model: ct-chest-lungs, select: each, when: {}}\n",
        MODELS,
    )
    assert rules.selection("other-model") is SeriesSelection.BEST
    assert rules.selection("ct-chest-lungs") is SeriesSelection.EACH
    assert "select: 'all' is not a valid SeriesSelection; allowed: best, each" in rules_error(
        "rules:\n  - {name: a, model: other-model, select: all, when: {}}\n"
    )
    message = rules_error(
        "rules:\n  - {name: a, model: other-model, when: {}}\n"
        "  - {name: b, model: other-model, select: each, when: {}}\n"
    )
    assert "rules 'a' (select: best) and 'b' (select: each) route to other-model" in message


def test_unknown_model_names_the_rule_and_the_known_models() -> None:
    message = rules_error("rules:\n  - {name: lungs, model: ct-lungz, when: {}}\n")
    assert "rule 'lungs'" in message
    assert "unknown model 'ct-lungz'" in message
    assert "ct-chest-lungs" in message


def test_unknown_keyword_suggests_the_right_one() -> None:
    message = rules_error("rules:\n  - {name: r, model: other-model, when: {SliceThicknes: 1}}\n")
    assert "rule 'r'" in message
    assert "'SliceThicknes' is neither a DICOM keyword" in message
    assert "SliceThickness" in message


def test_sequence_keyword_is_refused() -> None:
    message = rules_error(
        "rules:\n  - {name: r, model: other-model, when: {AnatomicRegionSequence: x}}\n"
    )
    assert "VR SQ" in message


def test_bad_regex() -> None:
    message = rules_error(
        'rules:\n  - {name: r, model: other-model, when: {SeriesDescription: {regex: "(lung"}}}\n'
    )
    assert "rule 'r'" in message and "SeriesDescription" in message
    assert "bad regex '(lung'" in message


def test_unknown_matcher_key() -> None:
    message = rules_error(
        'rules:\n  - {name: r, model: other-model, when: {SeriesDescription: {regx: "a"}}}\n'
    )
    assert "unknown matcher key 'regx'" in message
    assert "glob, regex, min, max, contains, present" in message


def test_unknown_rule_key_with_suggestion() -> None:
    message = rules_error("rules:\n  - {name: r, model: other-model, when: {}, unles: {}}\n")
    assert "unknown key 'unles'" in message and "did you mean 'unless'" in message


def test_file_name_is_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("rules:\n  - {name: r, model: nope, when: {}}\n", encoding="utf-8")
    with pytest.raises(RulesError, match=r"site\.yaml: rule 'r': unknown model"):
        load_rules(path, MODELS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [1]", "rule #1: a rule must be a mapping"),
        ("rules:\n  - {model: other-model, when: {}}\n", "missing required key 'name'"),
        ("rules:\n  - {name: r, model: other-model}\n", "missing required key 'when'"),
        ("rules:\n  - {name: r, model: other-model, when: {body_part: LUNGS}}\n", "BodyPart"),
        ("rules:\n  - {name: r, model: other-model, when: {axial: yes please}}\n", "axial"),
        (
            "rules:\n  - {name: r, model: other-model, when: {SliceThickness: {min: 5, max: 1}}}",
            "min 5 is greater than max 1",
        ),
        (
            "rules:\n  - {name: r, model: other-model, when: {SliceThickness: {min: a}}}",
            "min must be a number",
        ),
        (
            "rules:\n  - {name: r, model: other-model, when: {X: {glob: a, regex: b}}}",
            "neither a DICOM keyword",
        ),
        (
            "rules:\n  - {name: r, model: other-model, when: {Modality: {glob: a, regex: b}}}",
            "use exactly one of",
        ),
        (
            "rules:\n  - {name: r, model: other-model, when: {sop_class_uid: CTImage}}",
            "did you mean CTImageStorage",
        ),
        (
            "rules:\n  - {name: r, model: other-model, when: {}}\n"
            "  - {name: r, model: other-model, when: {}}\n",
            "duplicate rule name",
        ),
        ("rules:\n  - {name: r, model: m, when: {}, name: s}\n", "duplicate key 'name'"),
        ("rules: [\n", "not valid YAML"),
        ("models/rules.yaml", "pass a pathlib.Path"),
        ("rules: []\nextra: 1\n", "unknown key 'extra'"),
        ("version: 2\nrules: []\n", "unsupported version 2"),
    ],
)
def test_validation_messages(text: str, expected: str) -> None:
    assert expected in rules_error(text)


def test_parse_rules_takes_parsed_data() -> None:
    data = {"rules": [{"name": "r", "model": "other-model", "when": {"modality": "CT"}}]}
    assert parse_rules(data, MODELS).rules[0].when[0].matcher == Equals("CT")


def test_no_eval_of_rule_text() -> None:
    # Python in a value is just text to compare against
    rules = one_rule("      SeriesDescription: \"__import__('os').system('true')\"\n")
    assert not matches(rules, info())


def test_yaml_examples_in_the_docs_load() -> None:
    text = (REPO / "docs" / "routing.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    assert len(blocks) >= 2
    for block in blocks:
        models = set(re.findall(r"^\s+model: ([\w-]+)", block, re.MULTILINE))
        assert load_rules(block, models).rules
