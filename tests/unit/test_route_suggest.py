"""The rule `models add --add-rule` draws from a model's declared input."""

from __future__ import annotations

from dicom_ai_node.domain import BodyPart, InputSpec
from dicom_ai_node.route.load import load_rules
from dicom_ai_node.route.suggest import rule_for


def _load(rule: str, model: str) -> list[str]:
    rules = load_rules("rules:\n" + rule, [model])
    return [f"{c.key} {c.matcher.describe()}" for r in rules for c in (*r.when, *r.unless)]


def test_the_rule_carries_each_declared_condition_and_loads() -> None:
    spec = InputSpec(
        modalities=frozenset({"MR", "CT"}),
        body_parts=frozenset({BodyPart.HEAD}),
        sop_class_uids=frozenset({"1.2.840.10008.5.1.4.1.1.4"}),
        require_original=True,
        require_axial=True,
    )
    text = rule_for("brain-seg", spec, "brain-seg-2")
    assert 'name: "brain-seg-2"' in text and 'model: "brain-seg"' in text
    conditions = " | ".join(_load(text, "brain-seg"))
    for expected in ("CT", "MR", "HEAD", "1.2.840.10008.5.1.4.1.1.4", "ORIGINAL", "LOCALIZER"):
        assert expected in conditions, conditions


def test_a_model_declaring_nothing_still_gets_a_valid_rule() -> None:
    text = rule_for("anything", InputSpec())
    assert "number_of_slices" in text
    assert _load(text, "anything")
