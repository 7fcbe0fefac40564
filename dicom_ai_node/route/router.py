"""Route: decide which models a series (and each series of a study) goes to, and why.

Pure and deterministic: the same headers, rules and input specs give the same decision
and the same explanation, line for line. A series goes to a model when a rule for that
model matches and the model's declared input accepts it; within a study, a series-scope
model then gets only the best of those series (see :mod:`.select`), unless its rules
``select: each`` series. The node's own results are recognised and never routed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..domain import BodyPart, InputSpec, Scope, SeriesInfo, SeriesSelection
from ..identity import made_by_node
from .bodypart import BodyPartDecision, BodyRegionClassifier, normalise_body_part
from .rules import RuleSet, rule_values
from .select import check_input, select_series

__all__ = [
    "Assignment",
    "RouteDecision",
    "RuleOutcome",
    "SeriesRouting",
    "StudyRouting",
    "route_series",
    "route_study",
]


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule decided for one series.

    ``accepted`` is true when the rule matched and the model's input spec accepts the
    series; ``reasons`` then is empty, otherwise it holds the failed conditions or the
    input-spec reasons.
    """

    rule: str
    model: str
    matched: bool
    accepted: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteDecision:
    """The routing decision for one series.

    Attributes
    ----------
    series_instance_uid:
        The series.
    body_part:
        Its normalised body region and where that came from.
    models:
        Models whose rule matched and whose input spec accepts the series, in rule order.
    explanation:
        One line per rule: matched, which condition failed, or the input-spec reasons.
    outcomes:
        The same per rule, as data.
    made_by:
        The model that made the series, when it is this node's own result
        (:func:`~dicom_ai_node.identity.made_by_node`); such a series is never routed.
    """

    series_instance_uid: str
    body_part: BodyPartDecision
    models: tuple[str, ...]
    explanation: tuple[str, ...]
    outcomes: tuple[RuleOutcome, ...] = ()
    made_by: str = ""

    @property
    def routed(self) -> bool:
        """Whether at least one model takes the series."""
        return bool(self.models)

    @property
    def reason(self) -> str:
        """One line: the models, or why the series is not routed."""
        if self.routed:
            return "routed to " + ", ".join(self.models)
        if self.made_by:
            return f"made by this node ({self.made_by}): its own results are never routed"
        if not self.outcomes:
            return "no routing rules are configured"
        rejected = [o for o in self.outcomes if o.matched and not o.accepted]
        if rejected:
            o = rejected[0]
            return f"rule {o.rule!r} matched but model {o.model} does not accept the series: " + (
                "; ".join(o.reasons)
            )
        parts = [f"{o.rule!r}: {o.reasons[0] if o.reasons else 'no match'}" for o in self.outcomes]
        more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
        return "no rule matched: " + "; ".join(parts[:3]) + more


def route_series(
    info: SeriesInfo,
    rules: RuleSet,
    specs: Mapping[str, InputSpec],
    classifier: BodyRegionClassifier | None = None,
) -> RouteDecision:
    """Route one series: normalise its body part, evaluate every rule, check input specs.

    Parameters
    ----------
    info:
        The series summary.
    rules:
        Validated rules, evaluated in file order; several may match.
    specs:
        Model name -> declared input. A model without a spec accepts any series (the
        explanation says so).
    classifier:
        Optional body-region hook passed to :func:`~.bodypart.normalise_body_part`.

    Returns
    -------
    RouteDecision
        The models and one explanation line per rule.
    """
    made_by = made_by_node(info.header)
    if made_by is not None:  # checked first: the body-region model never reads our output
        unknown = BodyPartDecision(BodyPart.UNKNOWN, "none", "UNKNOWN (not examined)")
        decision = RouteDecision(info.series_instance_uid, unknown, (), (), (), made_by)
        return dataclasses.replace(decision, explanation=(decision.reason,))
    body_part = normalise_body_part(info, classifier)
    values = rule_values(info, body_part)
    models: list[str] = []
    lines: list[str] = []
    outcomes: list[RuleOutcome] = []
    for rule in rules:
        result = rule.evaluate(values)
        if not result.matched:
            lines.append(result.explanation)
            outcomes.append(RuleOutcome(rule.name, rule.model, False, False, result.reasons))
            continue
        spec = specs.get(rule.model)
        reasons = check_input(info, spec, body_part) if spec is not None else []
        if reasons:
            lines.append(
                f"{result.explanation}; but {rule.model} does not accept the series: "
                + "; ".join(reasons)
            )
            outcomes.append(RuleOutcome(rule.name, rule.model, True, False, tuple(reasons)))
            continue
        note = "input spec accepts the series" if spec is not None else "model declares no input"
        lines.append(f"{result.explanation}; {note}")
        outcomes.append(RuleOutcome(rule.name, rule.model, True, True))
        if rule.model not in models:
            models.append(rule.model)
    return RouteDecision(
        info.series_instance_uid, body_part, tuple(models), tuple(lines), tuple(outcomes)
    )


@dataclass(frozen=True)
class Assignment:
    """One model's job in one study: the series it runs on, and why these.

    ``selection`` says when the job is decided: ``best`` (and study scope) once the study
    is quiet, one job per study; ``each`` as soon as the series is complete, one job per
    series.
    """

    model: str
    study_instance_uid: str
    series_instance_uids: tuple[str, ...]
    scope: Scope
    explanation: tuple[str, ...]
    selection: SeriesSelection = SeriesSelection.BEST


@dataclass(frozen=True)
class SeriesRouting:
    """A series of a study after per-study selection.

    ``models`` are the models that run on this series; ``notes`` say why it was or was not
    chosen for each model whose rule accepted it.
    """

    info: SeriesInfo
    decision: RouteDecision
    models: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def routed(self) -> bool:
        """Whether any model runs on this series."""
        return bool(self.models)

    @property
    def reason(self) -> str:
        """One line: the models, or why the series is not routed."""
        if self.models:
            return "routed to " + ", ".join(self.models)
        if self.decision.routed:
            lost = [n for n in self.notes if n.startswith("a better series")]
            return lost[0] if lost else "not chosen"
        return self.decision.reason


@dataclass(frozen=True)
class StudyRouting:
    """Routing of every series received, grouped by study, and the resulting jobs."""

    series: tuple[SeriesRouting, ...]
    assignments: tuple[Assignment, ...]

    @property
    def study_instance_uids(self) -> tuple[str, ...]:
        """The studies, in order."""
        return tuple(dict.fromkeys(s.info.study_instance_uid for s in self.series))

    def for_series(self, series_instance_uid: str) -> SeriesRouting:
        """The routing of one series; ``KeyError`` if it is not part of this routing."""
        for item in self.series:
            if item.info.series_instance_uid == series_instance_uid:
                return item
        raise KeyError(series_instance_uid)


def _series_key(info: SeriesInfo) -> tuple[float, str]:
    value = info.header.get("SeriesNumber")
    try:
        number = float(value) if value not in (None, "") else float("inf")
    except (TypeError, ValueError):
        number = float("inf")
    return number, info.series_instance_uid


def route_study(
    series: Sequence[SeriesInfo],
    rules: RuleSet,
    specs: Mapping[str, InputSpec],
    classifier: BodyRegionClassifier | None = None,
) -> StudyRouting:
    """Route every series, then give each series-scope model one series per study.

    Each series is routed with :func:`route_series`. Then, per study and per model, a
    ``Scope.SERIES`` model whose rules ``select: best`` gets the best accepted series
    (:func:`~.select.select_series`), one whose rules ``select: each`` gets every
    accepted series as a job of its own, and a ``Scope.STUDY`` model gets all accepted
    series in one job. Series that lose get a note "a better series was chosen for
    model X: ...". The node's own results (:func:`~dicom_ai_node.identity.made_by_node`)
    are never candidates.

    Parameters
    ----------
    series:
        Series of one or more studies.
    rules, specs, classifier:
        As for :func:`route_series`.

    Returns
    -------
    StudyRouting
        Series ordered by study (first seen), SeriesNumber and UID, and the assignments.
    """
    studies: dict[str, list[SeriesInfo]] = {}
    for info in series:
        studies.setdefault(info.study_instance_uid, []).append(info)
    routed: list[SeriesRouting] = []
    assignments: list[Assignment] = []
    for study_uid, members in studies.items():
        members = sorted(members, key=_series_key)
        decisions = {
            m.series_instance_uid: route_series(m, rules, specs, classifier) for m in members
        }
        chosen: dict[str, list[str]] = {m.series_instance_uid: [] for m in members}
        notes: dict[str, list[str]] = {m.series_instance_uid: [] for m in members}
        models = dict.fromkeys(model for d in decisions.values() for model in d.models)
        for model in models:
            spec = specs.get(model, InputSpec())
            candidates = [m for m in members if model in decisions[m.series_instance_uid].models]
            if rules.selection(model) is SeriesSelection.EACH and spec.scope is Scope.SERIES:
                made = _each(model, study_uid, candidates, notes)
            else:
                made = [_assign(model, study_uid, candidates, decisions, spec, notes)]
            for assignment in made:
                if assignment.series_instance_uids:
                    assignments.append(assignment)
                for uid in assignment.series_instance_uids:
                    chosen[uid].append(model)
        for m in members:
            uid = m.series_instance_uid
            routed.append(SeriesRouting(m, decisions[uid], tuple(chosen[uid]), tuple(notes[uid])))
    return StudyRouting(tuple(routed), tuple(assignments))


def _each(
    model: str, study_uid: str, candidates: list[SeriesInfo], notes: dict[str, list[str]]
) -> list[Assignment]:
    """``select: each``: every accepted series is a job of its own."""
    why = ("select: each: every matching series gets its own job",)
    out = []
    for c in candidates:
        uid = c.series_instance_uid
        notes[uid].append(f"chosen for model {model}: its rules take each matching series")
        out.append(Assignment(model, study_uid, (uid,), Scope.SERIES, why, SeriesSelection.EACH))
    return out


def _assign(
    model: str,
    study_uid: str,
    candidates: list[SeriesInfo],
    decisions: Mapping[str, RouteDecision],
    spec: InputSpec,
    notes: dict[str, list[str]],
) -> Assignment:
    if spec.scope is Scope.STUDY:
        uids = tuple(c.series_instance_uid for c in candidates)
        for uid in uids:
            notes[uid].append(f"chosen for model {model}: it takes every accepted series")
        why = (f"study-scope model: all {len(uids)} accepted series",)
        return Assignment(model, study_uid, uids, Scope.STUDY, why)
    pairs = [(c, decisions[c.series_instance_uid].body_part) for c in candidates]
    selection = select_series(pairs, spec)
    for uid, reasons in selection.rejected.items():
        text = "; ".join(reasons).removeprefix("a better series was chosen: ")
        notes[uid].append(f"a better series was chosen for model {model}: {text}")
    if selection.chosen is None:  # cannot happen: candidates passed check_input already
        return Assignment(model, study_uid, (), Scope.SERIES, selection.explanation)
    winner = selection.chosen.series_instance_uid
    others = "; ".join(selection.explanation[1:])
    note = f"chosen for model {model} (best of {len(candidates)} accepted series)"
    notes[winner].append(note + (f": {others}" if others else ""))
    return Assignment(model, study_uid, (winner,), Scope.SERIES, selection.explanation)
