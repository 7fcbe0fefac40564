"""Privacy: the action table of the Basic Application Level Confidentiality Profile.

``profile.csv`` beside this module holds PS3.15 Table E.1-1 (tag, keyword, name, the
Basic Profile action, the action under the Retain UIDs Option, E.3.9, and under the
Retain Device Identity Option, E.3.8) plus a few rows the node adds; ``README.md`` there
says where each row comes from and what is missing.
"""

from __future__ import annotations

import csv
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

__all__ = ["Action", "ActionTable", "ProfileRow", "load_table"]

#: The data file, read once per process.
TABLE_FILE = "profile.csv"


class Action(enum.StrEnum):
    """Action codes of PS3.15 Table E.1-1a."""

    DUMMY = "D"  # replace with a non-zero length dummy value consistent with the VR
    ZERO = "Z"  # replace with a zero length value (or a dummy)
    REMOVE = "X"  # remove (a sequence with all its items)
    KEEP = "K"  # keep (unchanged for non-sequences, cleaned for sequences)
    CLEAN = "C"  # replace with values of similar meaning known not to identify
    UID = "U"  # replace with a UID that is internally consistent within a set of instances
    ZERO_OR_DUMMY = "Z/D"  # Z unless D is needed for IOD conformance (Type 2 vs 1)
    REMOVE_OR_ZERO = "X/Z"  # X unless Z is needed (Type 3 vs 2)
    REMOVE_OR_DUMMY = "X/D"  # X unless D is needed (Type 3 vs 1)
    REMOVE_ZERO_OR_DUMMY = "X/Z/D"  # X unless Z or D is needed (Type 3 vs 2 vs 1)
    REMOVE_ZERO_OR_UIDS = "X/Z/U*"  # X unless Z or replacing the contained UIDs is needed

    @classmethod
    def parse(cls, code: str, where: str) -> Action:
        """The action of ``code``; a ``ValueError`` naming ``where`` and the codes known."""
        try:
            return cls(code)
        except ValueError:
            known = ", ".join(a.value for a in cls)
            raise ValueError(f"{where}: unknown action {code!r} (known: {known})") from None


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of Table E.1-1 (or a row the node adds, ``source == "node"``)."""

    tag: int
    keyword: str
    name: str
    basic: Action
    retain_uids: Action | None
    retain_device: Action | None
    source: str

    def action(self, *, retain_uids: bool, retain_device: bool) -> Action:
        """The action under the options used (PS3.15 E.3.8, E.3.9).

        An option's column, when it has an entry, replaces the Basic Profile's action;
        where both options name one (Device UID), they agree.
        """
        if retain_device and self.retain_device is not None:
            return self.retain_device
        if retain_uids and self.retain_uids is not None:
            return self.retain_uids
        return self.basic


#: The repeating groups and the private-attribute row of Table E.1-1, by their id.
CURVE_ROW = "50xxxxxx"
OVERLAY_ROWS = ("60xx3000", "60xx4000")
PRIVATE_ROW = "ggggeeee"


@dataclass(frozen=True)
class ActionTable:
    """Table E.1-1 as loaded: rows by tag, plus the pattern rows by their id."""

    rows: Mapping[int, ProfileRow]
    patterns: Mapping[str, ProfileRow]

    def row(self, tag: int) -> ProfileRow | None:
        """The row of an attribute named in the table by its exact tag, if any."""
        return self.rows.get(tag)

    def __len__(self) -> int:
        return len(self.rows) + len(self.patterns)


def _optional(code: str, where: str) -> Action | None:
    return Action.parse(code, where) if code else None


def parse_table(lines: list[str]) -> ActionTable:
    """Parse the CSV text of the table (see :data:`TABLE_FILE`).

    Raises
    ------
    ValueError
        On an unknown action code or a duplicate tag, naming the line.
    """
    rows: dict[int, ProfileRow] = {}
    patterns: dict[str, ProfileRow] = {}
    for number, record in enumerate(csv.DictReader(lines), start=2):
        where = f"{TABLE_FILE} line {number}"
        key = record["tag"].lower()
        is_pattern = not all(c in "0123456789abcdef" for c in key)
        row = ProfileRow(
            tag=-1 if is_pattern else int(key, 16),
            keyword=record["keyword"],
            name=record["name"],
            basic=Action.parse(record["basic"], where),
            retain_uids=_optional(record["retain_uids"], where),
            retain_device=_optional(record["retain_device"], where),
            source=record["source"],
        )
        if (row.tag in rows) or (key in patterns):
            raise ValueError(f"{where}: tag {key} listed twice")
        if is_pattern:
            patterns[key] = row
        else:
            rows[row.tag] = row
    missing = {CURVE_ROW, *OVERLAY_ROWS, PRIVATE_ROW} - set(patterns)
    if missing:
        raise ValueError(f"{TABLE_FILE}: pattern rows {sorted(missing)} are missing")
    return ActionTable(rows=rows, patterns=patterns)


@functools.cache
def load_table() -> ActionTable:
    """The table shipped with the package (read once)."""
    text = resources.files("dicom_ai_node.privacy").joinpath(TABLE_FILE).read_text("utf-8")
    return parse_table(text.splitlines())
