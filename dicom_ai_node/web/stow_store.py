"""Web: the instances of one STOW-RS request, checked as C-STORE checks them, then stored.

PS3.18 10.5 (Store Transaction). Each part streams into a temp file
(:meth:`~dicom_ai_node.store.ingest.Ingest.open_temp`) and is checked when it ends: a
PS3.10 file (preamble, ``DICM``, file meta), a transfer syntax and SOP Class the node
accepts, the data set's UIDs conformant and equal to the file meta's, and within the
study the URL names. The checks of the data set are the receive stage's own, handed in by
the wiring as :class:`InstanceChecks` (the web stage does not import receive). Only after
the body's closing boundary are the checked instances stored, each exactly as a C-STORE
is (:meth:`~dicom_ai_node.store.ingest.Ingest.store`: fsync, rename, fsync folder,
indexed in one transaction): a malformed, truncated or refused body stores nothing, and
the response, sent after the last commit, never names an instance that is not kept.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..errors import StorageError, StorageFullError
from ..metrics import NodeMetrics
from ..store.files import TempFile, valid_uid
from ..store.index import IndexOutcome, SeriesAttrs
from ..store.ingest import Ingest, InstanceAttrs, NotStored, TempWriter
from . import stow_response as reason
from .stow_multipart import media_type_of

__all__ = ["InstanceChecks", "PartOutcome", "StowIngress", "StowTransaction", "TooMany"]

log = logging.getLogger(__name__)

#: PS3.10 7.1: 128-byte preamble, ``DICM``, then the file meta group, which starts with
#: its group length (0002,0000) UL in explicit VR little endian.
_PREFIX = 132
_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"
#: Most bytes of preamble and file meta a part may add to the data set bound.
MAX_META_BYTES = 64 * 1024


@dataclass(frozen=True)
class InstanceChecks:
    """The receive stage's reading of a data set, handed in by the wiring (``app_web``).

    Attributes
    ----------
    read:
        Instance and series values of a data set as encoded, with its transfer syntax
        (``receive.attrs.read_series``).
    parse_errors:
        What ``read`` raises for a data set it cannot read.
    sop_classes:
        The storage SOP Classes the node accepts (the SCP's presentation contexts).
    transfer_syntaxes:
        The transfer syntaxes it accepts.
    inflated_within:
        Whether a deflated data set inflates to at most a bound (PS3.5 A.5).
    """

    read: Callable[[bytes, str], tuple[InstanceAttrs, SeriesAttrs]]
    parse_errors: tuple[type[Exception], ...]
    sop_classes: frozenset[str]
    transfer_syntaxes: frozenset[str]
    inflated_within: Callable[[bytes, int], bool]


@dataclass(frozen=True)
class StowIngress:
    """What STOW-RS stores with: the node's ingest (shared with the C-STORE handler), the
    checks, the bound on one data set (``dicom.max_instance_mb``) and the metrics."""

    ingest: Ingest
    checks: InstanceChecks
    max_instance_bytes: int
    metrics: NodeMetrics | None = None
    #: Most parts one request may carry (413 beyond).
    max_parts: int = 5000


class TooMany(ValueError):
    """A request with more parts than :attr:`StowIngress.max_parts` (413)."""


@dataclass
class PartOutcome:
    """One part: the SOP Instance it holds (as far as known) and why it failed, if it did.

    ``failure`` is a Failure Reason (PS3.18 I.2.2) or None once stored;
    ``unsupported`` marks a part of another media type than ``application/dicom``.
    """

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    failure: int | None = None
    unsupported: bool = False


@dataclass
class _Checked:
    temp: TempFile
    sha256: str
    instance: InstanceAttrs
    series: SeriesAttrs
    transfer_syntax: str
    outcome: PartOutcome


@dataclass
class _Part:
    outcome: PartOutcome = field(default_factory=PartOutcome)
    writer: TempWriter | None = None
    skipping: bool = False


def part10_head(data: bytes) -> tuple[int, str, str, str]:
    """Where the data set starts, and the transfer syntax, SOP Class and Instance UIDs of
    the file meta (PS3.10 7.1).

    Raises
    ------
    ValueError
        When ``data`` is not a PS3.10 file or its file meta cannot be read.
    """
    if data[128:_PREFIX] != b"DICM" or data[_PREFIX : _PREFIX + 8] != _GROUP_LENGTH:
        raise ValueError("not a PS3.10 file with its file meta group length")
    (length,) = struct.unpack_from("<I", data, _PREFIX + 8)
    start = _PREFIX + 12
    if length > MAX_META_BYTES or start + length > len(data):
        raise ValueError("file meta group longer than its bound or the file")
    meta = read_dataset(io.BytesIO(data[start : start + length]), False, True)
    values = []
    for keyword in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        value = meta.get(keyword)
        values.append(str(value).strip(" \0") if value is not None else "")
    return start + length, values[0], values[1], values[2]


class StowTransaction:
    """The parts of one STOW-RS request: each written, then checked; all stored at the end.

    A :class:`~.stow_multipart.PartSink`. Parameters: the ingress, the Study Instance
    UID the URL names (None for ``/studies``) and the sender, recorded as the calling AE
    title of the stored instances.
    """

    def __init__(self, ingress: StowIngress, study_uid: str | None, sender: str) -> None:
        self.ingress = ingress
        self.study_uid = study_uid
        self.sender = sender
        self.outcomes: list[PartOutcome] = []
        self._checked: list[_Checked] = []
        self._part: _Part | None = None
        self._limit = ingress.max_instance_bytes + MAX_META_BYTES + _PREFIX + 12

    # -- PartSink ---------------------------------------------------------------------------
    def begin(self) -> None:
        if len(self.outcomes) >= self.ingress.max_parts:
            raise TooMany(f"more than {self.ingress.max_parts} parts in one request")
        self._part = _Part()
        self.outcomes.append(self._part.outcome)

    def headers(self, fields: dict[str, str]) -> None:
        part = self._current()
        media, _ = media_type_of(fields.get("content-type", "application/dicom"))
        if media != "application/dicom":
            part.outcome.failure, part.outcome.unsupported = reason.CANNOT_UNDERSTAND, True
            part.skipping = True
            return
        try:
            part.writer = self.ingress.ingest.open_temp()
        except StorageError as exc:  # includes StorageFullError
            log.error("refused STOW-RS part: %s", exc)
            self._fail(part, reason.OUT_OF_RESOURCES)

    def data(self, piece: bytes) -> None:
        part = self._current()
        if part.skipping or part.writer is None:
            return
        if part.writer.size + len(piece) > self._limit:
            log.warning("refused STOW-RS part: larger than dicom.max_instance_mb")
            self._fail(part, reason.OUT_OF_RESOURCES)
            return
        try:
            part.writer.write(piece)
        except StorageError as exc:
            log.error("refused STOW-RS part: %s", exc)
            part.writer = None  # the writer removed its file
            self._fail(part, reason.OUT_OF_RESOURCES)

    def end(self) -> None:
        part, self._part = self._current(), None
        if part.skipping or part.writer is None:
            return
        temp = part.writer.finish()
        try:
            checked = self._check(temp, part.outcome)
        except BaseException:
            self.ingress.ingest.discard(temp)
            raise
        if checked is None:
            self.ingress.ingest.discard(temp)
        else:
            self._checked.append(checked)

    # -- the request's end ------------------------------------------------------------------
    def commit(self) -> list[PartOutcome]:
        """Store every checked instance (after the closing boundary); the outcomes.

        An unexpected error stops here with the temp files of the instances not yet
        stored removed (what was stored stays, indexed; the client gets no 2xx).
        """
        try:
            while self._checked:
                self._store(self._checked[0])
                self._checked.pop(0)
        finally:
            self.abort()
        if self.ingress.metrics is not None:
            for outcome in self.outcomes:
                if outcome.failure is not None:
                    self.ingress.metrics.instance_received("refused")
        return self.outcomes

    def abort(self) -> None:
        """Keep nothing: remove the temp files of the part in progress and those checked."""
        if self._part is not None and self._part.writer is not None:
            self._part.writer.discard()
        self._part = None
        for item in self._checked:
            self.ingress.ingest.discard(item.temp)
        self._checked = []

    # -- one part ---------------------------------------------------------------------------
    def _current(self) -> _Part:
        if self._part is None:  # python-multipart calls begin before anything else
            raise RuntimeError("part data outside a part")
        return self._part

    def _fail(self, part: _Part, failure: int) -> None:
        if part.writer is not None:
            part.writer.discard()
            part.writer = None
        part.skipping = True
        part.outcome.failure = failure

    def _check(self, temp: TempFile, outcome: PartOutcome) -> _Checked | None:
        """The instance of a complete part, checked; None (``outcome`` says why) if refused."""
        try:
            data = self.ingress.ingest.read_temp(temp, self._limit)
            offset, syntax, sop_class, sop_uid = part10_head(data)
        except (ValueError, EOFError, StorageError, struct.error) as exc:
            log.warning("refused STOW-RS part: %s", type(exc).__name__)
            outcome.failure = reason.CANNOT_UNDERSTAND
            return None
        outcome.sop_class_uid = sop_class if valid_uid(sop_class) else ""
        outcome.sop_instance_uid = sop_uid if valid_uid(sop_uid) else ""
        body = data[offset:]
        del data
        checks = self.ingress.checks
        if syntax not in checks.transfer_syntaxes:
            outcome.failure = reason.TRANSFER_SYNTAX_NOT_SUPPORTED
            return None
        try:
            instance, series = checks.read(body, syntax)
            if syntax == DeflatedExplicitVRLittleEndian and not checks.inflated_within(
                body, self.ingress.max_instance_bytes
            ):
                outcome.failure = reason.OUT_OF_RESOURCES
                return None
        except checks.parse_errors as exc:
            log.warning("refused STOW-RS part: cannot parse data set: %s", type(exc).__name__)
            outcome.failure = reason.CANNOT_UNDERSTAND
            return None
        outcome.failure = self._problem(instance, sop_class, sop_uid, len(body))
        if outcome.failure is not None:
            return None
        if self.ingress.metrics is not None:
            self.ingress.metrics.bytes_received(len(body))
        sha256 = hashlib.sha256(body).hexdigest()
        return _Checked(temp, sha256, instance, series, syntax, outcome)

    def _problem(
        self, instance: InstanceAttrs, sop_class: str, sop_uid: str, size: int
    ) -> int | None:
        """The Failure Reason of a data set that was read, or None (the C-STORE checks)."""
        uids = (
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid,
        )
        if size > self.ingress.max_instance_bytes:
            return reason.OUT_OF_RESOURCES
        if not all(valid_uid(u) for u in uids):
            log.warning("refused STOW-RS instance: missing or non-conformant UID")
            return reason.CANNOT_UNDERSTAND
        if instance.sop_instance_uid != sop_uid or instance.sop_class_uid != sop_class:
            log.warning(
                "refused STOW-RS instance %s: data set UIDs differ from the file meta", sop_uid
            )
            return reason.DATASET_DOES_NOT_MATCH_SOP_CLASS
        if sop_class not in self.ingress.checks.sop_classes:
            return reason.SOP_CLASS_NOT_SUPPORTED
        if self.study_uid is not None and instance.study_instance_uid != self.study_uid:
            log.warning("refused STOW-RS instance %s: not of the study the URL names", sop_uid)
            return reason.STUDY_UID_MISMATCH
        return None

    def _store(self, item: _Checked) -> None:
        """Store and index one instance as a C-STORE is stored; its outcome."""
        outcome, metrics = item.outcome, self.ingress.metrics
        try:
            stored = self.ingress.ingest.store(
                item.temp,
                item.sha256,
                item.instance,
                item.series,
                transfer_syntax_uid=item.transfer_syntax,
                calling_ae_title=self.sender,
            )
        except (NotStored, StorageFullError) as exc:
            log.error("refused STOW-RS instance %s: %s", outcome.sop_instance_uid, exc)
            outcome.failure = reason.OUT_OF_RESOURCES
        except StorageError as exc:
            log.error("refused STOW-RS instance %s: %s", outcome.sop_instance_uid, exc)
            outcome.failure = reason.CANNOT_UNDERSTAND
        else:
            if stored is IndexOutcome.CONFLICT:
                outcome.failure = reason.DUPLICATE_SOP_INSTANCE
            elif metrics is not None:
                metrics.instance_received(
                    "duplicate" if stored is IndexOutcome.DUPLICATE else "stored"
                )
