"""Route: reading and validating the rules file; errors name the file and the rule.

The file is YAML (a safe loader that refuses duplicate keys) with a ``rules`` list. Each
rule is checked here (its keys, DICOM keywords or pseudo-keys, matchers and patterns,
known models, one ``select`` per model) and becomes a :class:`.rules.Rule`. The schema
is described, with examples, in docs/routing.md. Nothing is evaluated as code. Reading
the file in :func:`load_rules` is the only I/O of the route stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword

from ..domain import BodyPart, SeriesSelection, parse_enum
from ..errors import ConfigError
from .conditions import (
    MATCHER_KEYS,
    Condition,
    Contains,
    Equals,
    Glob,
    Matcher,
    OneOf,
    Present,
    Range,
    Regex,
    Scalar,
)
from .rules import PSEUDO_KEYS, Rule, RuleSet

__all__ = ["RulesError", "load_rules", "parse_rules"]

_RULE_KEYS = ("name", "model", "when", "unless", "description", "enabled", "select")
_TOP_KEYS = ("rules", "version")
_NOT_MATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW"})
_UID = re.compile(r"^[0-9*?]+(\.[0-9*?]+)*$")
_UID_BY_KEYWORD = {v[4]: k for k, v in UID_dictionary.items() if v[4]}


class RulesError(ConfigError):
    """A rules file that cannot be used; the message names the file and the rule."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise RulesError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_rules(
    source: str | Path,
    known_models: Collection[str],
    unavailable: Mapping[str, str] | None = None,
) -> RuleSet:
    """Load and validate routing rules from a YAML file (``Path``) or YAML text (``str``).

    Parameters
    ----------
    source:
        A :class:`pathlib.Path` to read, or the YAML text itself.
    known_models:
        Model names rules may route to; any other name is an error.
    unavailable:
        Models installed but unable to run here, with the reason (e.g. their package
        missing): rules naming them are validated and kept, but skipped with the reason.

    Returns
    -------
    RuleSet
        The rules, in file order.

    Raises
    ------
    RulesError
        On YAML syntax errors, unknown keys or keywords, bad patterns, unknown models or
        values of the wrong type; the message names the file and the rule.
    """
    if isinstance(source, Path):
        name = str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"{name}: cannot read rules file: {exc}") from exc
    else:
        name, text = "<rules>", source
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except RulesError as exc:
        raise RulesError(f"{name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{name}: not valid YAML: {exc}") from exc
    return parse_rules(data, known_models, source=name, unavailable=unavailable)


def parse_rules(
    data: Any,
    known_models: Collection[str],
    source: str = "<rules>",
    unavailable: Mapping[str, str] | None = None,
) -> RuleSet:
    """Validate already-parsed rules (the mapping a YAML file holds); see :func:`load_rules`."""
    if not isinstance(data, Mapping) or "rules" not in data:
        hint = " (to read a file, pass a pathlib.Path)" if isinstance(data, str) else ""
        raise RulesError(f"{source}: expected a mapping with a 'rules' list{hint}")
    _no_unknown(data, _TOP_KEYS, f"{source}: top level")
    if data.get("version", 1) != 1:
        raise RulesError(f"{source}: unsupported version {data['version']!r}; expected 1")
    items = data["rules"] or []
    if not isinstance(items, list):
        raise RulesError(f"{source}: 'rules' must be a list of rules")
    rules: list[Rule] = []
    missing = dict(unavailable or {})
    for index, item in enumerate(items, start=1):
        where = f"{source}: rule #{index}"
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            where = f"{source}: rule {item['name']!r}"
        try:
            rule = _parse_rule(item, frozenset(known_models) | frozenset(missing))
        except RulesError as exc:
            raise RulesError(f"{where}: {exc}") from None
        if any(r.name == rule.name for r in rules):
            raise RulesError(f"{where}: duplicate rule name")
        if rule.model in missing:
            rule = dataclasses.replace(rule, unavailable=missing[rule.model])
        rules.append(rule)
    _one_selection_per_model(rules, source)
    return RuleSet(tuple(rules), source)


def _one_selection_per_model(rules: Sequence[Rule], source: str) -> None:
    """The enabled rules of one model must agree on ``select``: a model runs either once
    per study or once per series, never both for the same study."""
    first: dict[str, Rule] = {}
    for rule in rules:
        if not rule.enabled:
            continue
        other = first.setdefault(rule.model, rule)
        if other.select is not rule.select:
            raise RulesError(
                f"{source}: rules {other.name!r} (select: {other.select.value}) and "
                f"{rule.name!r} (select: {rule.select.value}) route to {rule.model} but "
                "select series differently; give them the same select"
            )


def _no_unknown(data: Mapping[Any, Any], allowed: Collection[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise RulesError(f"{where}: unknown key {key!r}{extra}; allowed: {', '.join(allowed)}")


def _parse_rule(item: Any, known_models: frozenset[str]) -> Rule:
    if not isinstance(item, Mapping):
        raise RulesError("a rule must be a mapping with name, model and when")
    _no_unknown(item, _RULE_KEYS, "rule")
    for key in ("name", "model", "when"):
        if key not in item:
            raise RulesError(f"missing required key {key!r}")
    name, model = item["name"], item["model"]
    if not isinstance(name, str) or not name.strip():
        raise RulesError("'name' must be a non-empty string")
    if not isinstance(model, str) or model not in known_models:
        known = ", ".join(sorted(known_models)) or "(none)"
        raise RulesError(f"unknown model {model!r}; known models: {known}")
    description = item.get("description", "")
    enabled = item.get("enabled", True)
    if not isinstance(description, str):
        raise RulesError("'description' must be a string")
    if not isinstance(enabled, bool):
        raise RulesError("'enabled' must be true or false")
    try:
        select = parse_enum(SeriesSelection, item.get("select", "best"))
    except ValueError as exc:
        raise RulesError(f"select: {exc}") from None
    when = _parse_conditions(item["when"], "when")
    unless = _parse_conditions(item.get("unless") or {}, "unless")
    return Rule(name.strip(), model, when, unless, description.strip(), enabled, select)


def _parse_conditions(data: Any, section: str) -> tuple[Condition, ...]:
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        raise RulesError(f"'{section}' must be a mapping of key: matcher")
    conditions = []
    for key, spec in data.items():
        _check_key(key, section)
        try:
            matcher = _parse_matcher(key, spec)
        except RulesError as exc:
            raise RulesError(f"{section}: {key}: {exc}") from None
        conditions.append(Condition(key, matcher))
    return tuple(conditions)


def _check_key(key: Any, section: str) -> None:
    if not isinstance(key, str):
        raise RulesError(f"{section}: condition key {key!r} must be a string")
    if key in PSEUDO_KEYS:
        return
    tag = tag_for_keyword(key)
    if tag is None:
        names = [*PSEUDO_KEYS, *keyword_dict]
        hint = difflib.get_close_matches(key, names, n=3)
        extra = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise RulesError(
            f"{section}: {key!r} is neither a DICOM keyword (PS3.6) nor one of the pseudo-keys "
            f"{', '.join(PSEUDO_KEYS)}{extra}"
        )
    if dictionary_VR(tag) in _NOT_MATCHABLE_VRS:
        raise RulesError(
            f"{section}: {key} has VR {dictionary_VR(tag)}; sequences and bulk data are not "
            "in the header rules test (use body_part for the anatomic region)"
        )


def _parse_matcher(key: str, spec: Any) -> Matcher:
    if isinstance(spec, Mapping):
        matcher = _parse_mapping(spec)
    elif isinstance(spec, list):
        if not spec:
            raise RulesError("an empty list matches nothing")
        matcher = OneOf(tuple(_scalar(v) for v in spec))
    else:
        matcher = Equals(_scalar(spec))
    return _normalise_for_key(key, matcher)


def _parse_mapping(spec: Mapping[Any, Any]) -> Matcher:
    keys = set(spec)
    unknown = [k for k in spec if k not in MATCHER_KEYS]
    if unknown:
        raise RulesError(
            f"unknown matcher key {unknown[0]!r}; allowed: {', '.join(MATCHER_KEYS)} "
            "(or a plain value, or a list of values)"
        )
    if not keys or (len(keys) > 1 and not keys <= {"min", "max"}):
        raise RulesError(
            f"use exactly one of glob, regex, contains, present, or min/max; got {sorted(keys)}"
        )
    if keys <= {"min", "max"}:
        low, high = (_bound(spec, k) for k in ("min", "max"))
        if low is not None and high is not None and low > high:
            raise RulesError(f"min {low:g} is greater than max {high:g}")
        return Range(low, high)
    (kind,) = keys
    value = spec[kind]
    if kind == "present":
        if not isinstance(value, bool):
            raise RulesError("present must be true or false")
        return Present(value)
    if kind == "contains":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise RulesError("contains needs at least one value")
        return Contains(tuple(_scalar(v) for v in items))
    if not isinstance(value, str):
        raise RulesError(f"{kind} pattern must be a string, got {value!r}")
    if kind == "glob":
        return Glob(value)
    try:
        return Regex(value, re.compile(value))
    except re.error as exc:
        raise RulesError(f"bad regex {value!r}: {exc}") from None


def _bound(spec: Mapping[Any, Any], key: str) -> float | None:
    if key not in spec:
        return None
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(f"{key} must be a number, got {value!r}")
    return float(value)


def _scalar(value: Any) -> Scalar:
    if isinstance(value, str | int | float | bool):
        return value
    raise RulesError(f"values must be text, numbers or true/false, got {value!r}")


def _normalise_for_key(key: str, matcher: Matcher) -> Matcher:
    """Check values of pseudo-keys with a fixed vocabulary, and spell them canonically."""
    if key == "body_part" and isinstance(matcher, Equals | OneOf | Contains):
        try:
            if isinstance(matcher, Equals):
                return Equals(_body_part(matcher.value))
            return type(matcher)(tuple(_body_part(v) for v in matcher.values))
        except ValueError as exc:
            raise RulesError(str(exc)) from None
    if key == "sop_class_uid" and isinstance(matcher, Equals | OneOf | Contains):
        if isinstance(matcher, Equals):
            return Equals(_uid(matcher.value))
        return type(matcher)(tuple(_uid(v) for v in matcher.values))
    is_bool = isinstance(matcher, Equals) and isinstance(matcher.value, bool)
    if key == "axial" and not isinstance(matcher, Present) and not is_bool:
        raise RulesError("axial takes true or false")
    return matcher


def _body_part(value: Scalar) -> str:
    return parse_enum(BodyPart, str(value)).value


def _uid(value: Scalar) -> str:
    text = str(value).strip()
    if text in _UID_BY_KEYWORD:
        return _UID_BY_KEYWORD[text]
    if not _UID.match(text) or len(text) > 64:
        hint = difflib.get_close_matches(text, list(_UID_BY_KEYWORD), n=1)
        extra = f" (did you mean {hint[0]}?)" if hint else ""
        raise RulesError(f"{text!r} is not a UID or a SOP Class keyword{extra}")
    return text
