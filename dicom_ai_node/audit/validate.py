"""Audit: validate audit messages against the DICOM Audit Message Schema (PS3.15 A.5.1).

The schema is vendored in ``schema/``: ``audit-message.rnc`` is the standard's text
(RELAX NG compact syntax) and ``audit-message.rng`` its XML syntax, which lxml reads;
:func:`rng_from_rnc` makes the second from the first (a test checks they agree).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

__all__ = ["SCHEMA_DIR", "SchemaProblem", "rng_from_rnc", "validate"]

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
RNC_PATH = SCHEMA_DIR / "audit-message.rnc"
RNG_PATH = SCHEMA_DIR / "audit-message.rng"

RNG_HEADER = (
    "<!-- DICOM Audit Message Schema (PS3.15 A.5.1.1) in RELAX NG XML syntax, made from\n"
    "     audit-message.rnc by dicom_ai_node.audit.validate.rng_from_rnc (rnc2rng).\n"
    "     Do not edit: regenerate it from the .rnc. -->\n"
)

_lock = threading.Lock()  # an lxml validator is not to be shared between threads


@dataclass(frozen=True)
class SchemaProblem:
    """One way a message departs from the schema.

    ``path`` and ``kind`` name the place and the kind of error and never contain values
    from the message (safe for the application log); ``message`` is libxml2's full text,
    which may quote values (for tests and the audit log owner only).
    """

    line: int
    path: str
    kind: str
    message: str


def rng_from_rnc(rnc_text: str) -> str:
    """The XML syntax of a RELAX NG compact schema (``rnc2rng``, a test dependency).

    The standard's schema puts ``##`` documentation comments after the values they
    describe, which the compact syntax does not allow there; they are read as plain
    comments, which changes nothing in the grammar.
    """
    import rnc2rng

    grammar = rnc2rng.dumps(rnc2rng.loads(rnc_text.replace("##", "#")))
    declaration, _, body = str(grammar).partition("\n")
    return f"{declaration}\n{RNG_HEADER}{body}"


@functools.cache
def _schema() -> Any:
    return etree.RelaxNG(etree.parse(str(RNG_PATH)))


def validate(xml: bytes) -> list[SchemaProblem]:
    """The schema problems of one audit message; empty when it is valid (PS3.15 A.5.1).

    Raises
    ------
    ValueError
        Never: a message that is not well-formed XML is reported as one problem.
    """
    try:
        document = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        return [SchemaProblem(exc.lineno or 0, "/", "not well-formed XML", str(exc))]
    with _lock:
        schema = _schema()
        if schema.validate(document):
            return []
        return [
            SchemaProblem(error.line, error.path or "/", error.type_name, error.message)
            for error in schema.error_log
        ]
