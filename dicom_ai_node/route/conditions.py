"""Route: conditions on one series attribute, each tested by a matcher, with reasons.

A condition tests one key of the values a rule sees (:func:`.rules.rule_values`): a DICOM
keyword of the series header (PS3.6) or a pseudo-key (:data:`.rules.PSEUDO_KEYS`). Its
matcher is a plain value (:class:`Equals`), a list (:class:`OneOf`) or a mapping with one
of :data:`MATCHER_KEYS`; :meth:`Condition.check` says in words why it holds or not.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MATCHER_KEYS",
    "Condition",
    "Contains",
    "Equals",
    "Glob",
    "Matcher",
    "OneOf",
    "Present",
    "Range",
    "Regex",
    "Scalar",
]

#: Keys a matcher mapping may use.
MATCHER_KEYS = ("glob", "regex", "min", "max", "contains", "present")

Scalar = str | int | float | bool


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
