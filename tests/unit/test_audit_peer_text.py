"""Audit messages stay one line and one record whatever text a peer sent (CWE-117).

AE titles, usernames and reasons come from the network. Every line break a reader may
see (CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029), escape sequences, characters XML
1.0 cannot hold (NUL, lone surrogates) and bidirectional controls: the message is still
recorded, valid against the schema, one line of the local audit log and one syslog
record, and still names what it is about.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dicom_ai_node.audit import codes
from dicom_ai_node.audit.codes import Outcome
from dicom_ai_node.audit.messages import (
    AuditMessage,
    AuditSource,
    Participant,
    security_alert,
    user_authentication,
)
from dicom_ai_node.audit.syslog import BOM, syslog_message
from dicom_ai_node.audit.trail import AuditLog, AuditTrail, one_line
from dicom_ai_node.audit.validate import validate

T0 = dt.datetime(2026, 12, 7, 10, 0, 0, tzinfo=dt.UTC)
SOURCE = AuditSource("AI_NODE")
NODE = Participant.application_entity("AI_NODE", is_requestor=False, host="ai-node.example")
FORGED = "1999-12-31 23:59:59,999 INFO dicom_ai_node: FORGED"
#: Every character some reader takes for a line break, then escape, NUL, DEL, a C1
#: control, a lone surrogate and a right-to-left override.
HOSTILE = [*"\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", "\x1b[2J", "\x00", "\x7f", "\x9b"]
HOSTILE += ["\ud800", "\u202e"]


def _alert(calling: str, reason: str) -> AuditMessage:
    """The Security Alert of a caller refused (as :class:`~.node.NodeAudit` makes it)."""
    return security_alert(
        event_type=codes.NODE_AUTHENTICATION,
        reporter=NODE,
        performers=[Participant.application_entity(calling, is_requestor=True, host="10.0.0.9")],
        subject_node="10.0.0.9",
        subject_name=calling,
        description=reason,
        source=SOURCE,
        at=T0,
    )


def _login(username: str) -> AuditMessage:
    """The User Authentication failure of a refused username."""
    return user_authentication(
        login=True,
        user=Participant(username, True, network_access_point="10.0.0.9"),
        node=NODE,
        source=SOURCE,
        at=T0,
        outcome=Outcome.MINOR_FAILURE,
    )


def _one_record(xml: bytes) -> None:
    text = xml.decode("utf-8")  # a lone surrogate would not even encode
    assert len(text.splitlines()) == 1, repr(text)
    assert "\x1b" not in text
    assert validate(xml) == [], [p.message for p in validate(xml)]
    assert "FORGED" in text  # the record still says what the peer sent


@pytest.mark.parametrize("char", HOSTILE)
def test_a_hostile_calling_ae_title_and_reason_stay_in_one_valid_line(char: str) -> None:
    _one_record(_alert(f"X{char}FORGED", f"refused {char}{FORGED}").xml)


@pytest.mark.parametrize("char", HOSTILE)
def test_a_hostile_username_stays_in_one_valid_line(char: str) -> None:
    _one_record(_login(f"{char}{FORGED}{char}").xml)


def test_the_trail_writes_one_line_and_one_syslog_record_each(tmp_path: Path) -> None:
    """Through the local log and the syslog framing, for every hostile character."""
    log = AuditLog(tmp_path / "audit.log")
    trail = AuditTrail(log, None, hostname="h\r\nFORGED", procid="1\n", clock=lambda: T0)
    messages = [_login(f"{char}{FORGED}") for char in HOSTILE]
    for message in messages:
        trail.record(message)
    trail.close()
    assert trail.invalid == 0
    lines = (tmp_path / "audit.log").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(messages)
    for line in lines[:-1]:
        _one_record(line)
    framed = syslog_message(lines[0], severity=4, at=T0, hostname="h\r\nX", procid="1\n")
    assert b"\n" not in framed and b"\r" not in framed
    ET.fromstring(framed.partition(BOM)[2])


def test_a_line_break_a_builder_let_through_is_written_as_a_reference(tmp_path: Path) -> None:
    """Defence in depth: the trail keeps a message one line even if a builder did not."""
    good = _login("alice").xml
    broken = good.replace(b'UserID="alice"', 'UserID="a\nb\u2028c"'.encode()).replace(
        b"</AuditMessage>", b"<!--\r\n-->\n</AuditMessage>"
    )
    log = AuditLog(tmp_path / "audit.log")
    trail = AuditTrail(log, None, hostname="h", procid="1", clock=lambda: T0)
    trail.record(AuditMessage(codes.USER_AUTHENTICATION, Outcome.MINOR_FAILURE, 4, broken))
    trail.close()
    [line, end] = (tmp_path / "audit.log").read_bytes().split(b"\n")
    assert end == b"" and line == one_line(broken)
    assert len(line.decode().splitlines()) == 1
    participant = ET.fromstring(line).find("ActiveParticipant")
    assert participant is not None and participant.get("UserID") == "a\nb\u2028c"
