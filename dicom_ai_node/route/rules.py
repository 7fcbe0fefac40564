"""Route: routing rules as values, and the series values they are evaluated against.

A rule names a model and the conditions a series must meet for it (``when``, all must
hold) and conditions that exclude it (``unless``, any excludes); :meth:`Rule.evaluate`
names every condition that fails. Conditions test a DICOM keyword of the series header
(PS3.6) or a pseudo-key (:data:`PSEUDO_KEYS`), as :func:`rule_values` provides them.
Rules are read from the rules file by :func:`.load.load_rules`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..domain import BodyPart, SeriesInfo, SeriesSelection
from .bodypart import BodyPartDecision
from .conditions import Condition

__all__ = ["PSEUDO_KEYS", "Rule", "RuleResult", "RuleSet", "rule_values"]

#: Keys that are not DICOM keywords, with what they test.
PSEUDO_KEYS: Mapping[str, str] = {
    "modality": "Modality of the series, e.g. CT",
    "body_part": "normalised body region(s), e.g. CHEST (see docs/routing.md)",
    "calling_ae_title": "AE title of the sender",
    "sop_class_uid": "SOP Class UIDs of the instances (UID or keyword, e.g. CTImageStorage)",
    "axial": "true when ImageOrientationPatient is within 10 degrees of axial",
    "number_of_slices": "instances, or frames of a multi-frame instance",
}


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule for one series, with the reason in words."""

    rule: Rule
    matched: bool
    explanation: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """A validated rule: series meeting ``when`` and none of ``unless`` go to ``model``."""

    name: str
    model: str
    when: tuple[Condition, ...]
    unless: tuple[Condition, ...] = ()
    description: str = ""
    enabled: bool = True
    #: Which matching series of a study the model runs on: the best one, once the study
    #: is quiet, or each one as it completes.
    select: SeriesSelection = SeriesSelection.BEST
    #: Why the model cannot run on this node (e.g. its package is not installed); a rule
    #: with a reason is skipped, and the explanation says why. Empty when it can run.
    unavailable: str = ""

    def evaluate(self, values: Mapping[str, tuple[Any, ...]]) -> RuleResult:
        """Evaluate against :func:`rule_values` output; every failed condition is named."""
        head = f"rule {self.name!r} -> {self.model}"
        if not self.enabled:
            return RuleResult(self, False, f"{head}: disabled", ("rule is disabled",))
        if self.unavailable:
            why = f"model unavailable: {self.unavailable}"
            return RuleResult(self, False, f"{head}: skipped: {why}", (why,))
        failed = []
        for condition in self.when:
            holds, why = condition.check(values)
            if not holds:
                failed.append(why)
        if failed:
            text = f"{head}: no match: " + "; ".join(failed)
            return RuleResult(self, False, text, tuple(failed))
        for condition in self.unless:
            holds, why = condition.check(values)
            if holds:
                why = f"excluded by unless: {why}"
                return RuleResult(self, False, f"{head}: {why}", (why,))
        return RuleResult(self, True, f"{head}: matched ({_count(len(self.when))})")


def _count(n: int) -> str:
    return "no conditions" if n == 0 else f"all {n} conditions hold" if n > 1 else "1 condition"


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file, in file order."""

    rules: tuple[Rule, ...]
    source: str = "<rules>"

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def models(self) -> frozenset[str]:
        """The models the enabled rules route to (not those unavailable here)."""
        return frozenset(r.model for r in self.rules if r.enabled and not r.unavailable)

    def selection(self, model: str) -> SeriesSelection:
        """How ``model``'s rules select series (they agree: :func:`.load.parse_rules` checks)."""
        for rule in self.rules:
            if rule.model == model and rule.enabled:
                return rule.select
        return SeriesSelection.BEST


def rule_values(
    info: SeriesInfo, body_part: BodyPart | BodyPartDecision
) -> dict[str, tuple[Any, ...]]:
    """The values rules test: the header (each value as a tuple) plus the pseudo-keys.

    Attributes missing from ``info.header`` but known to :class:`SeriesInfo` (Modality,
    SeriesDescription, ImageType, SliceThickness, ...) are filled in from it.
    """
    values: dict[str, tuple[Any, ...]] = {}
    for key, value in info.header.items():
        items = tuple(value) if isinstance(value, list | tuple) else (value,)
        if items and all(v is not None and v != "" for v in items):
            values[key] = items
    known: dict[str, Any] = {
        "Modality": info.modality,
        "StudyInstanceUID": info.study_instance_uid,
        "SeriesInstanceUID": info.series_instance_uid,
        "BodyPartExamined": info.body_part_examined,
        "StudyDescription": info.study_description,
        "SeriesDescription": info.series_description,
        "ProtocolName": info.protocol_name,
        "ImageType": info.image_type,
        "SliceThickness": info.slice_thickness,
        "PixelSpacing": info.pixel_spacing,
        "ImageOrientationPatient": info.image_orientation_patient,
    }
    for key, value in known.items():
        if key not in values and value not in (None, "", ()):
            values[key] = tuple(value) if isinstance(value, tuple) else (value,)
    if isinstance(body_part, BodyPartDecision):
        regions = (body_part.body_part, *sorted(body_part.regions - {body_part.body_part}))
    else:
        regions = (BodyPart(body_part),)
    values["modality"] = (info.modality,) if info.modality else ()
    values["body_part"] = tuple(r.value for r in regions)
    values["calling_ae_title"] = (info.calling_ae_title,) if info.calling_ae_title else ()
    values["sop_class_uid"] = tuple(sorted(info.sop_class_uids))
    values["axial"] = () if info.is_axial is None else (bool(info.is_axial),)
    values["number_of_slices"] = (info.number_of_slices,)
    return {k: v for k, v in values.items() if v}
