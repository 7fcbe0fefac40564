"""Route: declarative rules and a pure matcher that explains its decision.

Flow: :func:`header_of` -> :func:`series_info` -> :func:`normalise_body_part` ->
rules (:func:`load_rules`) -> :func:`route_series` / :func:`route_study` (with
:func:`select_series` per model) -> :func:`format_study_routing`. No I/O here except
:func:`load_rules` reading the rules file it is given.
"""

from __future__ import annotations

from .bodypart import BodyPartDecision, BodyRegionClassifier, normalise_body_part
from .explain import format_study_routing
from .header import header_of, series_info
from .load import RulesError, load_rules, parse_rules
from .router import (
    Assignment,
    RouteDecision,
    RuleOutcome,
    SeriesRouting,
    StudyRouting,
    route_series,
    route_study,
)
from .rules import Rule, RuleSet
from .select import Selection, check_input, select_series

__all__ = [
    "Assignment",
    "BodyPartDecision",
    "BodyRegionClassifier",
    "RouteDecision",
    "Rule",
    "RuleOutcome",
    "RuleSet",
    "RulesError",
    "Selection",
    "SeriesRouting",
    "StudyRouting",
    "check_input",
    "format_study_routing",
    "header_of",
    "load_rules",
    "normalise_body_part",
    "parse_rules",
    "route_series",
    "route_study",
    "select_series",
    "series_info",
]
