"""Web: the ``multipart/related`` body of a STOW-RS request, read as it streams in.

PS3.18 10.5.1 (Store Transaction request): ``Content-Type: multipart/related;
type="application/dicom"; boundary=...`` (RFC 2387), one PS3.10 file per part. The
body syntax is RFC 2046 5.1.1, the same as ``multipart/form-data``, so the parts are
cut by python-multipart's streaming :class:`~python_multipart.multipart.MultipartParser`
(already the dependency Starlette reads forms with): it keeps at most one header line
and no part data, and hands each piece of a part to a :class:`PartSink` as it arrives.
A preamble before the first boundary is not accepted (no DICOMweb client sends one).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from ..dicomweb import DICOM_PART, MULTIPART_RELATED

__all__ = [
    "MalformedBody",
    "PartSink",
    "PartStream",
    "StowContentType",
    "UnsupportedMediaType",
    "media_type_of",
    "stow_content_type",
]

log = logging.getLogger(__name__)

#: RFC 2046 5.1.1: 1 to 70 characters of ``bchars``, not ending in a space.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
#: Longest header line of a part, and most header lines a part may have.
MAX_HEADER_BYTES = 4096
MAX_HEADERS = 16


class UnsupportedMediaType(ValueError):
    """The request is not ``multipart/related; type="application/dicom"`` (415)."""


class MalformedBody(ValueError):
    """The multipart body or its boundary cannot be read (400)."""


@dataclass(frozen=True)
class StowContentType:
    """A STOW-RS request's media type, checked (PS3.18 8.7.3.5.1)."""

    boundary: str


def media_type_of(header: str) -> tuple[str, Message]:
    """The media type (lower case) of a Content-Type value and the parsed header (RFC 9110
    8.3.1); ``""`` when there is none."""
    message = Message()
    message["Content-Type"] = header
    if not header.strip() or "/" not in header.split(";", 1)[0]:
        return "", message
    return message.get_content_type().lower(), message


def stow_content_type(header: str) -> StowContentType:
    """Check a request's Content-Type and return its boundary.

    Raises
    ------
    UnsupportedMediaType
        Another media type, or no ``type`` parameter, or a ``type`` other than
        ``application/dicom`` (PS3.18 10.5.1.1: the node accepts PS3.10 instances only).
    MalformedBody
        No boundary, or one RFC 2046 does not allow.
    """
    media, message = media_type_of(header)
    if media != MULTIPART_RELATED:
        raise UnsupportedMediaType(f"{media or 'no media type'} is not {MULTIPART_RELATED}")
    part_type = message.get_param("type")
    if not isinstance(part_type, str) or part_type.strip().lower() != DICOM_PART:
        raise UnsupportedMediaType(f'{MULTIPART_RELATED} needs type="{DICOM_PART}"')
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not _BOUNDARY.match(boundary):
        raise MalformedBody("missing or invalid multipart boundary")
    return StowContentType(boundary)


class PartSink(Protocol):
    """What receives the parts of one body, in order (each call may raise to stop)."""

    def begin(self) -> None:
        """A part starts."""

    def headers(self, fields: dict[str, str]) -> None:
        """Its header fields (names in lower case) are complete."""

    def data(self, piece: bytes) -> None:
        """A piece of its content."""

    def end(self) -> None:
        """It ended (its closing boundary was read)."""


class PartStream:
    """Feeds a multipart body, piece by piece, to a :class:`PartSink`.

    Parameters
    ----------
    boundary:
        The request's boundary.
    sink:
        Receives the parts.
    """

    def __init__(self, boundary: str, sink: PartSink) -> None:
        self.sink = sink
        self.complete = False
        self._field = bytearray()
        self._value = bytearray()
        self._fields: dict[str, str] = {}
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._begin,
                "on_header_field": self._on_field,
                "on_header_value": self._on_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done,
                "on_part_data": self._data,
                "on_part_end": sink.end,
                "on_end": self._end,
            },
            max_header_count=MAX_HEADERS,
            max_header_size=MAX_HEADER_BYTES,
        )

    def write(self, chunk: bytes) -> None:
        """Parse the next bytes of the body.

        Raises
        ------
        MalformedBody
            When they break the multipart syntax.
        """
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedBody(f"malformed multipart body: {exc}") from None

    def close(self) -> None:
        """The body ended.

        Raises
        ------
        MalformedBody
            When its closing boundary never came (a truncated body).
        """
        if not self.complete:
            raise MalformedBody("the multipart body ended before its closing boundary")

    def _begin(self) -> None:
        self._fields = {}
        self.sink.begin()

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._fields[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _headers_done(self) -> None:
        self.sink.headers(self._fields)

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.sink.data(data[start:end])

    def _end(self) -> None:
        self.complete = True
