"""Log injection (CWE-117): text a peer controls never starts a line of any log.

A node process (``dicom-ai-node serve`` at DEBUG, its output in a file) gets CR, LF and
ESC in the places of an association a peer writes: the Calling and Called AE Titles of
the A-ASSOCIATE-RQ (PS3.8 9.3.2), the username of its User Identity sub-item (PS3.7
D.3.3.7) and the Study/Series Description of a C-STORE's data set. The injected text
looks like a log line of the node. After each case no line of the node's log, of the
local audit log or of a syslog spool file starts with it, the escape character never
reaches a file raw, and the records that name the peer's text are still there (the
audit messages are not lost, only cleaned). The syslog collector is not listening, so
audit messages wait in the spool. Requests and PDUs that cannot be decoded are each
logged in one line with the reason, without a traceback (PS3.8 9.3).
"""

from __future__ import annotations

import os
import re
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_ai_node.audit.syslog import BOM
from dicom_ai_node.log import CONTINUATION
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import NodeProcess, free_port, write_node_config
from .test_hostile_input import (
    ABORT,
    ASSOCIATE_RQ,
    COMMAND,
    CONTEXTS,
    CT,
    CX_CT,
    GATE_ABORT,
    LAST,
    PROVIDER_ABORT,
    USER_ABORT,
    RawPeer,
    context_item,
    encode,
    item,
    message,
    new_ct,
    p_data,
    pdu,
    store_raw,
)

pytestmark = [
    pytest.mark.integration,
    # pydicom warns (in the node's threads) about the non-conformant values sent here
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom"),
]

#: What each injection would make a line start with, were it written raw.
FORGED_LINE = "1999-12-31 23:59:59,999 INFO dicom_ai_node: FORGED"
#: Fits the 16 bytes of an AE title field.
SHORT = "X\r\nFORGED\x1b[2J"
#: Fits a Long String (64 characters) and a username.
LONG = f"\r\n{FORGED_LINE}\x1b[2J"
#: A username is UTF-8 (PS3.7 D.3.3.7.1): a line separator too.
USERNAME = f"\u2028{FORGED_LINE}{LONG}"
#: Line starts that only an injection makes.
_FORGED_START = re.compile(r"(FORGED|1999-12-31)")
#: Seconds any one wait of these tests may take.
WAIT_S = 20.0

KNOWN_CALLER = "SENDER"
KNOWN_USER = "alice"


def association_request(
    calling: bytes = KNOWN_CALLER.encode(),
    called: bytes = b"AI_NODE",
    user: bytes = b"",
    *,
    user_items: bytes | None = None,
    contexts: bytes | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) with the AE title fields as given.

    ``user`` is a username sent as a User Identity sub-item of type 1 (PS3.7 D.3.3.7.1);
    ``user_items`` replaces the sub-items of the User Information item, ``contexts`` the
    presentation context items.
    """
    fields = (1).to_bytes(2, "big") + bytes(2)
    fields += called.ljust(16)[:16] + calling.ljust(16)[:16] + bytes(32)
    if contexts is None:
        contexts = b"".join(context_item(i, a, (ts,)) for i, (a, ts) in CONTEXTS.items())
    if user_items is None:
        user_items = item(0x51, (16384).to_bytes(4, "big")) + item(0x52, b"1.2.826.0.1.3680043.9")
    if user:
        identity = bytes([1, 0]) + len(user).to_bytes(2, "big") + user + bytes(2)
        user_items += item(0x58, identity)
    application_context = item(0x10, b"1.2.840.10008.3.1.1.1")
    return pdu(ASSOCIATE_RQ, fields + application_context + contexts + item(0x50, user_items))


def store_command(priority: int) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1, implicit VR little endian) of ``priority``."""
    uid = b"1.2.3\0"
    elements = [
        (0x0002, CT.encode() + b"\0" * (len(CT) % 2)),
        (0x0100, struct.pack("<H", 0x0001)),
        (0x0110, struct.pack("<H", 1)),
        (0x0700, struct.pack("<H", priority)),
        (0x0800, struct.pack("<H", 0x0000)),
        (0x1000, uid),
    ]
    body = b"".join(struct.pack("<HHI", 0, tag, len(value)) + value for tag, value in elements)
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def _user_items(*extra: bytes) -> bytes:
    return item(0x51, (16384).to_bytes(4, "big")) + item(0x52, b"1.2.3") + b"".join(extra)


#: Requests and PDUs that cannot be decoded, sent first (True) or once associated
#: (False), and what the node answers. Today pynetdicom logs most of them with a traceback,
#: some with the peer's bytes raw.
MALFORMED = {
    "implementation version name with CR, LF and ESC": (
        True,
        association_request(user_items=_user_items(item(0x55, SHORT.encode()))),
        GATE_ABORT,
    ),
    "calling AE title outside ASCII": (True, association_request(b"A\xe9B"), GATE_ABORT),
    "calling AE title of spaces": (True, association_request(b" " * 16), GATE_ABORT),
    "maximum length sub-item of one byte": (
        True,
        association_request(user_items=item(0x51, b"\0") + item(0x52, b"1.2.3")),
        USER_ABORT,
    ),
    "presentation context without an abstract syntax": (
        True,
        association_request(
            contexts=item(0x20, bytes([1, 0, 0, 0]) + item(0x40, b"1.2.840.10008.1.2"))
        ),
        GATE_ABORT,
    ),
    "a second A-ASSOCIATE-RQ, calling AE title with CR, LF and ESC": (
        False,
        association_request(SHORT.encode()),
        PROVIDER_ABORT,
    ),
    "A-ABORT of source 5": (False, pdu(ABORT, bytes([0, 0, 5, 9])), PROVIDER_ABORT),
    "C-STORE of priority 7": (
        False,
        message(CX_CT, store_command(7), encode(new_ct())),
        PROVIDER_ABORT,
    ),
    "command set of random bytes": (
        False,
        p_data((CX_CT, COMMAND | LAST, os.urandom(64))),
        PROVIDER_ABORT,
    ),
}


@dataclass
class Node:
    """The node process under test and the files it writes."""

    process: NodeProcess
    root: Path

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.log"

    @property
    def spool(self) -> Path:
        return self.root / "audit" / "spool"

    def files(self) -> dict[str, str]:
        """Every log the node writes: its own, the audit log and each spooled message."""
        found = {"node log": self.process.log()}
        if self.audit_log.is_file():
            found["audit log"] = self.audit_log.read_text("utf-8", errors="replace")
        for path in sorted(self.spool.glob("*.msg")):
            found[f"spool {path.name}"] = path.read_text("utf-8", errors="replace")
        return found

    def request(self, data: bytes) -> str:
        """Send ``data`` on a new connection; what the node answers."""
        with RawPeer(self.port) as peer:
            peer.send(data)
            return peer.answer()


def start_node(
    tmp_path: Path,
    node_factory: type[NodeProcess],
    monkeypatch: pytest.MonkeyPatch,
    *,
    known_callers_only: bool = False,
) -> Node:
    """A node with the audit log on, a syslog collector that does not listen, user
    identities checked when sent (``alice`` without a passcode) and no models."""
    models = tmp_path / "models"
    models.mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    env = {
        "DICOM_AI_NODE_ROUTE_RULES_FILE": str(rules),
        "DICOM_AI_NODE_INFER_MODELS_DIR": str(models),
        "DICOM_AI_NODE_DICOM_USER_IDENTITY": "optional",
        "DICOM_AI_NODE_DICOM_ACCEPT_ONLY_KNOWN_CALLERS": str(known_callers_only).lower(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    extra = "\n".join(
        [
            "[audit]",
            'syslog_transport = "tls"',  # connection refused: every message is spooled
            'syslog_host = "127.0.0.1"',
            f"syslog_port = {free_port()}",
            "[[users]]",
            f'username = "{KNOWN_USER}"',
        ]
    )
    port = free_port()
    config = write_node_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'node.db'}",
        port,
        [(KNOWN_CALLER, free_port())],
        quiet_s=0.5,
        extra=extra,
    )
    process = node_factory(config, port)
    process.start()
    return Node(process, tmp_path)


@pytest.fixture
def node(
    tmp_path: Path, node_factory: type[NodeProcess], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Node]:
    """A node accepting any calling AE title."""
    yield start_node(tmp_path, node_factory, monkeypatch)


@pytest.fixture
def strict_node(
    tmp_path: Path, node_factory: type[NodeProcess], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Node]:
    """A node accepting only ``SENDER`` from 127.0.0.1 (the AE table)."""
    yield start_node(tmp_path, node_factory, monkeypatch, known_callers_only=True)


def wait_for(what: str, ready: Callable[[], bool]) -> None:
    """Wait (bounded) until ``ready()``."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        assert time.monotonic() < deadline, f"no {what} after {WAIT_S} s"
        time.sleep(0.1)


def assert_no_forged_lines(node: Node) -> None:
    """No line of any log starts with injected text; no escape character reaches a file.

    Lines are split wherever Python sees a line boundary (CR, LF, VT, FF, FS, GS, RS,
    NEL, U+2028, U+2029), the widest reading a log viewer may make.
    """
    for name, text in node.files().items():
        assert "\x1b" not in text, f"a raw ESC in the {name}"
        forged = [line for line in text.splitlines() if _FORGED_START.match(line)]
        assert not forged, f"{name} has lines started by a peer: {forged}"


def audit_records(node: Node) -> list[ET.Element]:
    """The audit log's messages, one per line, each parsed as XML on its own."""
    if not node.audit_log.is_file():
        return []
    lines = node.audit_log.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the audit log does not end with a line break"
    return [ET.fromstring(line) for line in lines[:-1]]


def audited(node: Node, event_id: str, mentioning: str = "FORGED") -> bool:
    """Whether the audit log and the spool hold a message of ``event_id`` naming the text."""
    local = [
        r
        for r in audit_records(node)
        if mentioning in ET.tostring(r, encoding="unicode")
        and r.find(f"EventIdentification/EventID[@csd-code='{event_id}']") is not None
    ]
    spooled = [
        path
        for path in node.spool.glob("*.msg")
        if f'csd-code="{event_id}"'.encode() in (data := path.read_bytes())
        and mentioning.encode() in data
    ]
    return bool(local) and bool(spooled)


def assert_spool_one_record_each(node: Node) -> None:
    """Each spooled message is one syslog record on one line, its XML well-formed."""
    for path in node.spool.glob("*.msg"):
        data = path.read_bytes()
        assert b"\n" not in data and b"\r" not in data, path.name
        ET.fromstring(data.partition(BOM)[2])


def test_calling_ae_title_with_line_breaks_is_refused_in_one_line(node: Node) -> None:
    """pynetdicom would log its decoding error with the title raw and a traceback; the gate
    refuses it first: A-ABORT 2/6 (invalid PDU parameter value, PS3.8 9.3.8), one line."""
    before = len(node.process.log())
    answer = node.request(association_request(calling=SHORT.encode()))
    wait_for("log line of the refusal", lambda: "FORGED" in node.process.log()[before:])
    time.sleep(0.5)  # anything else the refusal would log
    assert_no_forged_lines(node)
    new = node.process.log()[before:]
    assert "Traceback" not in new, new
    assert len([line for line in new.splitlines() if "FORGED" in line]) == 1, new
    assert answer == "A-ABORT 2/6"


def test_an_unknown_calling_ae_title_with_line_breaks_is_audited_in_one_line(
    strict_node: Node,
) -> None:
    node = strict_node
    assert node.request(association_request(calling=SHORT.encode())) == "A-ASSOCIATE-RJ 1/1/3"
    wait_for("Security Alert", lambda: audited(node, "110113"))
    assert_spool_one_record_each(node)
    assert_no_forged_lines(node)


def test_called_ae_title_with_line_breaks_is_audited_in_one_line(node: Node) -> None:
    assert node.request(association_request(called=SHORT.encode())) == "A-ASSOCIATE-RJ 1/1/7"
    wait_for("Security Alert", lambda: audited(node, "110113"))
    assert_spool_one_record_each(node)
    assert_no_forged_lines(node)


def test_username_with_line_breaks_is_audited_in_one_line(node: Node) -> None:
    answer = node.request(association_request(user=USERNAME.encode()))
    assert answer == "A-ASSOCIATE-RJ 1/1/1"
    wait_for("User Authentication", lambda: audited(node, "110114"))
    assert_spool_one_record_each(node)
    assert_no_forged_lines(node)


def test_descriptions_with_line_breaks_are_stored_and_logged_in_one_line(node: Node) -> None:
    """The descriptions are LO (at most 64 characters; PS3.5 6.2 forbids control characters
    other than ESC in them): the node stores what it gets and logs none of it raw."""
    _, [ds] = make_ct_series(1, 8, 8, seed=7)
    ds.StudyDescription = "S" * len(LONG)
    ds.SeriesDescription = "R" * len(LONG)
    data = encode(ds)
    data = data.replace(b"S" * len(LONG), LONG.encode()).replace(b"R" * len(LONG), LONG.encode())
    assert data.count(LONG.encode()) == 2
    assert store_raw(data, str(ds.SOPInstanceUID), context_id=CX_CT, port=node.port) == (
        "C-STORE-RSP 0x0000"
    )
    # the series completes after the quiet period and its transfer is audited
    wait_for("Instances Transferred", lambda: audited(node, "110104", mentioning="HOSTILE"))
    assert_spool_one_record_each(node)
    assert_no_forged_lines(node)


def logged_since(node: Node, since: int) -> str:
    """The node's log after ``since``, once something was logged there (bounded wait)."""
    wait_for("log line", lambda: len(node.process.log()) > since)
    time.sleep(0.3)  # anything else it would log about the same peer
    return node.process.log()[since:]


def test_malformed_pdus_are_logged_in_one_line_without_a_traceback(node: Node) -> None:
    """Each is answered as before and logged by the node in one line with the reason:
    no traceback, no continuation line (PS3.8 9.3, CWE-117)."""
    problems = []
    for name, (first, data, expected) in MALFORMED.items():
        before = len(node.process.log())
        with RawPeer(node.port) as peer:
            if not first:
                peer.associate()
            peer.send(data)
            answer = peer.answer()
        new = logged_since(node, before)
        marked = [line for line in new.splitlines() if line.startswith(CONTINUATION)]
        if answer != expected or "Traceback" in new or marked:
            problems.append(f"{name}: answered {answer} (expected {expected}), logged:\n{new}")
    assert not problems, "\n".join(problems)
    assert_no_forged_lines(node)
