"""Store: why a job runs on what it runs on, read back from what the assembler stored.

The assembler keeps its explanation with each job (``job.explanation``): ``routing``, one
line per rule (``rule 'NAME' -> MODEL: matched ...`` or why not); ``series``, the chosen
series; ``selection``, why those won over the other candidates
(``chosen UID: why``, ``preferred over UID: why``). :func:`routing_of` turns them into
the shape the operator's timeline and job detail show (:mod:`.timeline`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Candidate", "Routing", "routing_of"]

_RULE = re.compile(r"^rule ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") -> (.+?): matched")


@dataclass(frozen=True)
class Candidate:
    """A series routing weighed for a job: chosen or not, and why."""

    series_instance_uid: str
    chosen: bool
    why: str


@dataclass(frozen=True)
class Routing:
    """Why a job runs on what it runs on.

    Attributes
    ----------
    rules:
        The names of the rules that matched for the job's model.
    series:
        The series the job runs on (the first is the job's series).
    candidates:
        The chosen series and those it was preferred over, with why.
    selection:
        The selection's lines as routing wrote them.
    lines:
        One line per rule, as routing wrote them (matched or not, and why).
    """

    rules: tuple[str, ...]
    series: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    selection: tuple[str, ...]
    lines: tuple[str, ...]


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings from stored JSON (anything else: empty)."""
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _rule_name(quoted: str) -> str:
    try:
        name = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        return quoted[1:-1]
    return name if isinstance(name, str) else quoted[1:-1]


def routing_of(explanation: Mapping[str, Any], model_name: str) -> Routing:
    """The routing of one job from what the assembler stored with it."""
    lines = _strings(explanation.get("routing"))
    selection = _strings(explanation.get("selection"))
    series = _strings(explanation.get("series"))
    rules = []
    for line in lines:
        found = _RULE.match(line)
        if found and found[2] == model_name and "; but " not in line:
            rules.append(_rule_name(found[1]))
    candidates: dict[str, Candidate] = {}
    for line in selection:
        for prefix, chosen in (("chosen ", True), ("preferred over ", False)):
            if line.startswith(prefix):
                uid, _, rest = line[len(prefix) :].partition(" ")
                uid = uid.rstrip(":")
                why = rest.partition(": ")[2] if not rest.startswith(":") else rest[1:].strip()
                candidates.setdefault(uid, Candidate(uid, chosen, why or rest))
    for uid in series:
        candidates.setdefault(uid, Candidate(uid, True, "; ".join(selection)))
    return Routing(tuple(rules), series, tuple(candidates.values()), selection, lines)
