"""Stage route: declarative routing rules, validated when loaded, evaluated with reasons.

A rule names a model and the conditions a series must meet for it (``when``, all must
hold) and conditions that exclude it (``unless``, any excludes). Conditions test a DICOM
keyword of the series header (PS3.6) or a pseudo-key (``modality``, ``body_part``,
``calling_ae_title``, ``sop_class_uid``, ``axial``, ``number_of_slices``). The schema is
described, with examples, in docs/routing.md. Nothing is evaluated as code.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword

from ..domain import BodyPart, SeriesInfo, SeriesSelection, parse_enum
from ..errors import ConfigError
from .bodypart import BodyPartDecision

__all__ = [
    "MATCHER_KEYS",
    "PSEUDO_KEYS",
    "Condition",
    "Contains",
    "Equals",
    "Glob",
    "Matcher",
    "OneOf",
    "Present",
    "Range",
    "Regex",
    "Rule",
    "RuleResult",
    "RuleSet",
    "RulesError",
    "load_rules",
    "parse_rules",
    "rule_values",
]

#: Keys that are not DICOM keywords, with what they test.
PSEUDO_KEYS: Mapping[str, str] = {
    "modality": "Modality of the series, e.g. CT",
    "body_part": "normalised body region(s), e.g. CHEST (see docs/routing.md)",
    "calling_ae_title": "AE title of the sender",
    "sop_class_uid": "SOP Class UIDs of the instances (UID or keyword, e.g. CTImageStorage)",
    "axial": "true when ImageOrientationPatient is within 10 degrees of axial",
    "number_of_slices": "instances, or frames of a multi-frame instance",
}
#: Keys a matcher mapping may use.
MATCHER_KEYS = ("glob", "regex", "min", "max", "contains", "present")

_RULE_KEYS = ("name", "model", "when", "unless", "description", "enabled", "select")
_TOP_KEYS = ("rules", "version")
_NOT_MATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW"})
_UID = re.compile(r"^[0-9*?]+(\.[0-9*?]+)*$")
_UID_BY_KEYWORD = {v[4]: k for k, v in UID_dictionary.items() if v[4]}

Scalar = str | int | float | bool


class RulesError(ConfigError):
    """A rules file that cannot be used; the message names the file and the rule."""


# ----------------------------------------------------------------------------- matchers


def _text(values: tuple[Any, ...]) -> str:
    return "\\".join(_str(v) for v in values)


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _wildcard(value: Scalar) -> bool:
    return isinstance(value, str) and ("*" in value or "?" in value)


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    """``*`` any run of characters, ``?`` one character, everything else literal."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL)


def _equal(actual: Any, expected: Scalar) -> bool:
    """Equality as in C-FIND matching (PS3.4 C.2.2.2): ``*`` and ``?`` in text are wildcards."""
    if _wildcard(expected):
        regex = _wildcard_regex(str(expected).strip().casefold())
        return regex.fullmatch(_str(actual).strip().casefold()) is not None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    if isinstance(expected, int | float):
        number = _number(actual)
        if number is not None:
            return math.isclose(number, expected, rel_tol=1e-9, abs_tol=1e-9)
    return _str(actual).strip().casefold() == _str(expected).strip().casefold()


def _candidates(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Each value, and for multi-valued attributes also their backslash-joined text."""
    return values if len(values) == 1 else (*values, _text(values))


@dataclass(frozen=True)
class Equals:
    """Scalar: equal, case-insensitive for text, numeric for numbers; ``*``/``?`` wildcards."""

    value: Scalar

    def test(self, values: tuple[Any, ...]) -> bool:
        return any(_equal(v, self.value) for v in _candidates(values))

    def describe(self) -> str:
        verb = "matches" if _wildcard(self.value) else "is"
        return f"{verb} {_str(self.value)!r}"


@dataclass(frozen=True)
class OneOf:
    """List: one of the given values (set membership)."""

    values: tuple[Scalar, ...]

    def test(self, values: tuple[Any, ...]) -> bool:
        return any(_equal(v, e) for v in _candidates(values) for e in self.values)

    def describe(self) -> str:
        return "is one of [" + ", ".join(_str(v) for v in self.values) + "]"


@dataclass(frozen=True)
class Glob:
    """``{glob: pattern}``: shell-style wildcards (``*``, ``?``, ``[...]``), case-insensitive."""

    pattern: str

    def test(self, values: tuple[Any, ...]) -> bool:
        pattern = self.pattern.casefold()
        return any(fnmatch.fnmatchcase(_str(v).casefold(), pattern) for v in _candidates(values))

    def describe(self) -> str:
        return f"matches glob {self.pattern!r}"


@dataclass(frozen=True)
class Regex:
    """``{regex: pattern}``: Python regular expression, searched anywhere in the value."""

    pattern: str
    compiled: re.Pattern[str] = field(compare=False, repr=False)

    def test(self, values: tuple[Any, ...]) -> bool:
        return any(self.compiled.search(_str(v)) for v in _candidates(values))

    def describe(self) -> str:
        return f"matches regex {self.pattern!r}"


@dataclass(frozen=True)
class Range:
    """``{min: a, max: b}`` (either may be left out): every value is a number in range."""

    min: float | None = None
    max: float | None = None

    def test(self, values: tuple[Any, ...]) -> bool:
        numbers = [_number(v) for v in values]
        return bool(numbers) and all(
            n is not None
            and (self.min is None or n >= self.min)
            and (self.max is None or n <= self.max)
            for n in numbers
        )

    def describe(self) -> str:
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "inf" if self.max is None else f"{self.max:g}"
        return f"is within [{low}, {high}]"


@dataclass(frozen=True)
class Contains:
    """``{contains: x}`` or ``{contains: [x, y]}``: every given item is one of the values."""

    values: tuple[Scalar, ...]

    def test(self, values: tuple[Any, ...]) -> bool:
        return all(any(_equal(v, e) for v in values) for e in self.values)

    def describe(self) -> str:
        return "contains " + ", ".join(_str(v) for v in self.values)


@dataclass(frozen=True)
class Present:
    """``{present: true|false}``: the attribute has (or has no) non-empty value."""

    present: bool

    def test(self, values: tuple[Any, ...]) -> bool:
        return bool(values) == self.present

    def describe(self) -> str:
        return "is present" if self.present else "is absent"


Matcher = Equals | OneOf | Glob | Regex | Range | Contains | Present


@dataclass(frozen=True)
class Condition:
    """One key tested by one matcher."""

    key: str
    matcher: Matcher

    def check(self, values: Mapping[str, tuple[Any, ...]]) -> tuple[bool, str]:
        """Test the condition; returns whether it holds and a sentence saying why."""
        actual = values.get(self.key, ())
        holds = self.matcher.test(actual)
        if not actual and not isinstance(self.matcher, Present):
            return holds, f"{self.key} is absent"
        if isinstance(self.matcher, Equals) and isinstance(self.matcher.value, bool):
            expected = _str(self.matcher.value)
            return holds, f"{self.key} is {_text(actual)}" + ("" if holds else f", not {expected}")
        shown = _text(actual)
        shown = shown if len(shown) <= 64 else shown[:61] + "..."
        verb = self.matcher.describe()
        if not holds:
            verb = "is not" + verb[2:] if verb.startswith("is ") else "does not " + _base(verb)
        return holds, f"{self.key} '{shown}' {verb}" if actual else f"{self.key} {verb}"


def _base(verb: str) -> str:
    first, _, rest = verb.partition(" ")
    return (first[:-2] if first.endswith("es") else first[:-1]) + " " + rest


# -------------------------------------------------------------------------------- rules


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

    def evaluate(self, values: Mapping[str, tuple[Any, ...]]) -> RuleResult:
        """Evaluate against :func:`rule_values` output; every failed condition is named."""
        head = f"rule {self.name!r} -> {self.model}"
        if not self.enabled:
            return RuleResult(self, False, f"{head}: disabled", ("rule is disabled",))
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
        """The models the enabled rules route to."""
        return frozenset(r.model for r in self.rules if r.enabled)

    def selection(self, model: str) -> SeriesSelection:
        """How ``model``'s rules select series (they agree: :func:`parse_rules` checks)."""
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


# ----------------------------------------------------------------------------- loading


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


def load_rules(source: str | Path, known_models: Collection[str]) -> RuleSet:
    """Load and validate routing rules from a YAML file (``Path``) or YAML text (``str``).

    Parameters
    ----------
    source:
        A :class:`pathlib.Path` to read, or the YAML text itself.
    known_models:
        Model names rules may route to; any other name is an error.

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
    return parse_rules(data, known_models, source=name)


def parse_rules(data: Any, known_models: Collection[str], source: str = "<rules>") -> RuleSet:
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
    for index, item in enumerate(items, start=1):
        where = f"{source}: rule #{index}"
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            where = f"{source}: rule {item['name']!r}"
        try:
            rule = _parse_rule(item, frozenset(known_models))
        except RulesError as exc:
            raise RulesError(f"{where}: {exc}") from None
        if any(r.name == rule.name for r in rules):
            raise RulesError(f"{where}: duplicate rule name")
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
