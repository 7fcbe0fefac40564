"""Web: the local audit log read back for the audit screen (PS3.15 A.5, one message a line).

Only the log's last :data:`TAIL_BYTES` are read, newest message first; a line that is not
a message (a torn last write) is skipped. What the screen shows of a message: its event
and event type, outcome, time, the active participants' user IDs and its description.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TAIL_BYTES", "AuditEntry", "read_entries"]

#: How much of the end of the log the screen reads.
TAIL_BYTES = 4 * 1024 * 1024

#: EventOutcomeIndicator values (PS3.15 A.5.2) as words.
OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure", "12": "major failure"}


@dataclass(frozen=True)
class AuditEntry:
    """One message of the local audit trail, as the audit screen lists it."""

    line: int
    event: str
    outcome: str
    at: str
    user: str
    text: str


def _tail(path: Path) -> list[bytes]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read(TAIL_BYTES)
    except OSError:
        return []
    lines = data.split(b"\n")
    return lines[1:] if size > TAIL_BYTES else lines


def _entry(number: int, line: bytes) -> AuditEntry | None:
    try:
        root = ET.fromstring(line)
    except ET.ParseError:
        return None
    ident = root.find("EventIdentification")
    if ident is None:
        return None
    event = ident.find("EventID")
    kind = ident.find("EventTypeCode")
    name = event.get("originalText", "") if event is not None else ""
    if kind is not None:
        name += f" / {kind.get('originalText', '')}"
    users = [p.get("UserID", "") for p in root.findall("ActiveParticipant")]
    text = ident.findtext("EventOutcomeDescription") or ""
    objects = [
        o.get("ParticipantObjectID", "") for o in root.findall("ParticipantObjectIdentification")
    ]
    if not text and objects:
        text = "objects: " + ", ".join(objects[:5])
    return AuditEntry(
        line=number,
        event=name,
        outcome=OUTCOMES.get(ident.get("EventOutcomeIndicator", ""), "unknown"),
        at=ident.get("EventDateTime", ""),
        user=", ".join(u for u in users if u),
        text=text,
    )


def read_entries(
    path: Path, *, event: str = "", user: str = "", outcome: str = "", since: str = ""
) -> list[AuditEntry]:
    """Messages of the log at ``path``, newest first, matching every filter given.

    ``event``, ``user`` and ``outcome`` match case-insensitively as substrings; ``since``
    (ISO 8601) keeps messages at or after it.
    """
    entries = []
    lines = _tail(path)
    for number in range(len(lines) - 1, -1, -1):
        line = lines[number].strip()
        if not line:
            continue
        entry = _entry(number + 1, line)
        if entry is None:
            continue
        if event and event.lower() not in entry.event.lower():
            continue
        if user and user.lower() not in entry.user.lower():
            continue
        if outcome and outcome.lower() not in entry.outcome.lower():
            continue
        if since and entry.at < since:
            continue
        entries.append(entry)
    return entries
