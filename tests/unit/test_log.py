"""The logging configuration: every record one line, whatever a peer put in it (CWE-117)."""

from __future__ import annotations

import io
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

from dicom_ai_node.log import CONTINUATION, configure_logging, escape_controls

#: A calling AE title as a hostile peer sends it (16 bytes at most).
HOSTILE = "X\r\nFORGED\x1b[2J"
#: A line only an injection makes.
FORGED = "1999-12-31 23:59:59,999 INFO dicom_ai_node: FORGED"

Output = Callable[[], str]


@pytest.fixture
def output() -> Iterator[Output]:
    """``configure_logging("DEBUG")``, undone after; yields a function reading its output."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pynetdicom").level)
    hooks = (threading.excepthook, sys.excepthook)
    configure_logging("DEBUG")
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)  # instead of stderr
    try:
        yield buffer.getvalue
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("pynetdicom").setLevel(saved[2])
        logging.captureWarnings(False)
        threading.excepthook, sys.excepthook = hooks


def _starts_forged(text: str) -> list[str]:
    """Lines (split wherever Python sees a line boundary) that an injection started."""
    return [line for line in text.splitlines() if line.startswith(("FORGED", "1999-12-31"))]


def test_a_third_party_record_quoting_a_peer_is_one_line(output: Output) -> None:
    """pynetdicom logs a calling AE title it refuses with the title as received."""
    logging.getLogger("pynetdicom.utils").error(
        f"Invalid 'Calling AE Title' value '{HOSTILE}' - must not contain control characters"
    )
    text = output()
    assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
    assert "'X\\r\\nFORGED\\x1b[2J'" in text
    assert not _starts_forged(text) and "\x1b" not in text


def test_arguments_and_structured_fields_are_escaped(output: Output) -> None:
    logging.getLogger("dicom_ai_node.test").warning(
        "refused %s", f"\n{FORGED}", extra={"ae_title": HOSTILE}
    )
    text = output()
    assert text.count("\n") == 1, repr(text)
    assert f"refused \\n{FORGED} ae_title=X\\r\\nFORGED\\x1b[2J" in text
    assert not _starts_forged(text)


#: Line breaks in any reading (CR, LF, VT, FF, FS, RS, NEL, U+2028, U+2029), escape, NUL,
#: DEL, the C1 CSI, bidirectional overrides and tab.
CONTROLS = "\r\n\x0b\x0c\x1c\x1e\x85\u2028\u2029\x1b\x00\x7f\x9b\u202e\u2066\t"


@pytest.mark.parametrize("char", list(CONTROLS))
def test_no_control_character_is_written_raw(output: Output, char: str) -> None:
    logging.getLogger("pynetdicom.dul").error("value %r and %s", "", f"A{char}FORGED")
    text = output()
    assert char not in text[:-1]
    assert len(text.splitlines()) == 1, repr(text)
    assert not _starts_forged(text)


def test_a_traceback_gives_no_line_start_to_the_peer(output: Output) -> None:
    """The exception message quotes the peer's line break: the line it starts is marked."""
    try:
        raise ValueError(f"Invalid 'Calling AE Title' value '{HOSTILE}'\n{FORGED}")
    except ValueError:
        logging.getLogger("pynetdicom.dul").exception("cannot decode")
    first, *rest = output().splitlines()
    assert first.endswith("ERROR pynetdicom.dul: cannot decode")
    assert rest and all(line.startswith(CONTINUATION) for line in rest), rest
    assert any("Traceback" in line for line in rest)
    assert any(line == CONTINUATION + FORGED for line in rest)


def test_warnings_go_through_the_same_handler(output: Output) -> None:
    """pydicom warns with a value it read (a peer's); warnings would print raw to stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR UI: '1.2{HOSTILE}'", UserWarning, stacklevel=1)
    text = output()
    assert "WARNING py.warnings:" in text and "1.2X\\r\\nFORGED\\x1b[2J" in text
    assert text.count("\n") == 1 and not _starts_forged(text), repr(text)


def test_an_exception_ending_a_thread_is_logged_marked(output: Output) -> None:
    def fail() -> None:
        raise ValueError(f"bad value\n{FORGED}")

    thread = threading.Thread(target=fail, name="peer-thread")
    thread.start()
    thread.join(5)
    first, *rest = output().splitlines()
    assert first.endswith("uncaught exception in thread peer-thread")
    assert rest and all(line.startswith(CONTINUATION) for line in rest)


def test_escape_controls_leaves_plain_text_alone() -> None:
    assert (
        escape_controls("AE 'PACS' from 10.0.0.1: C:\\dicom")
        == "AE 'PACS' from 10.0.0.1: C:\\dicom"
    )
    assert escape_controls("a\tb\u2028c\x85") == "a\\tb\\u2028c\\x85"
