"""Send: the Storage SCU: send data sets or DICOM files to a peer with C-STORE.

Implements the SCU side of the Storage Service Class (PS3.4 Annex B) over DIMSE
C-STORE (PS3.7 9.1.1) and the upper layer protocol (PS3.8). Presentation contexts are
planned from the data actually sent; files are streamed as encoded when the peer
accepts their own transfer syntax.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from ..errors import ConfigError, DeliveryError
from .net import (
    ConnectionWatch,
    NodeAE,
    Peer,
    check_calling_ae_title,
    reactor_parked,
    streamed_files,
)

__all__ = [
    "DEFAULT_CALLING_AE_TITLE",
    "DEFAULT_MAX_PDU",
    "MAX_PRESENTATION_CONTEXTS",
    "STATUS_SUCCESS",
    "Peer",
    "StoreOutcome",
    "is_delivered",
    "send_datasets",
]

logger = logging.getLogger(__name__)

DEFAULT_CALLING_AE_TITLE = "DICOM_AI_NODE"
MAX_PRESENTATION_CONTEXTS = 128
"""Presentation context IDs are odd numbers 1..255 (PS3.8 9.3.2.2), so 128 per association."""

DEFAULT_MAX_PDU = 16382
"""Maximum PDU length we announce for PDUs sent to us (PS3.8 D.1); responses are small."""

STATUS_SUCCESS = 0x0000
_WARNING_CODES = frozenset({0x0001, 0x0107, 0x0116})  # PS3.7 Annex C.4
_WARNING_RANGE = range(0xB000, 0xC000)  # PS3.7 Annex C.4: Bxxx; PS3.4 B.2.3 B000/B006/B007
_NATIVE_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_LE_GROUP = "native little endian"

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one instance.

    Attributes
    ----------
    sop_instance_uid:
        The instance ("" when the file could not be read).
    status:
        The C-STORE response Status (PS3.7 9.1.1.1.9), or ``None`` when nothing was sent.
    delivered:
        Whether the peer took responsibility for the instance: success or warning.
    message:
        A short explanation without patient data.
    """

    sop_instance_uid: str
    status: int | None
    delivered: bool
    message: str


def is_delivered(status: int) -> bool:
    """Whether a C-STORE status means the peer stored the instance.

    Success (0000H) and the Warning class (PS3.7 Annex C.4: 0001H, 0107H, 0116H and
    Bxxx, including the Storage warnings B000H, B006H and B007H of PS3.4 B.2.3) count
    as delivered; Failure, Cancel and anything unknown do not.

    Parameters
    ----------
    status:
        The (0000,0900) Status value.

    Returns
    -------
    bool
        ``True`` for success or warning.
    """
    return status == STATUS_SUCCESS or status in _WARNING_CODES or status in _WARNING_RANGE


def _describe_status(status: int, rsp: Dataset) -> str:
    """A one-line description of a C-STORE response status."""
    if status == STATUS_SUCCESS:
        return "success (0x0000)"
    kind = "warning" if is_delivered(status) else "failure"
    text = f"{kind} 0x{status:04X}"
    known = STORAGE_SERVICE_CLASS_STATUS.get(status)
    if known is not None:
        text += f" ({known[1]})"
    comment = rsp.get("ErrorComment")
    if comment:
        # Peer-written text: keep it short and printable.
        cleaned = "".join(c for c in str(comment) if c.isprintable() and c.isascii())[:64]
        text += f": {cleaned}"
    return text


@dataclass(frozen=True)
class _Item:
    """One instance to send, with what is needed to pick a presentation context."""

    index: int
    source: Dataset | Path
    sop_class_uid: UID
    sop_instance_uid: str
    transfer_syntax_uid: UID

    @property
    def streamable(self) -> bool:
        """A file whose encoded data set can be sent as is."""
        return isinstance(self.source, Path)

    @property
    def context_keys(self) -> list[tuple[UID, str]]:
        """(SOP class, group) keys of the presentation contexts this item can use."""
        ts = self.transfer_syntax_uid
        keys: list[tuple[UID, str]] = []
        if ts not in _NATIVE_LE:
            keys.append((self.sop_class_uid, str(ts)))
        if not ts.is_compressed and ts.is_little_endian:
            keys.append((self.sop_class_uid, _LE_GROUP))
        return keys


def _dataset_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax the data set is encoded in; explicit VR LE when unknown."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(ts)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian


def _plan_dataset(index: int, ds: Dataset) -> _Item:
    """Plan a data set; one without a Transfer Syntax UID gets a file meta copy that has one."""
    ts = _dataset_transfer_syntax(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        view = Dataset(ds)  # shares the elements; the caller's object is not changed
        view.file_meta = FileMetaDataset()
        view.file_meta.TransferSyntaxUID = ts
        ds = view
    return _Item(index, ds, UID(ds.SOPClassUID), str(ds.SOPInstanceUID), ts)


def _plan(index: int, source: Dataset | Path) -> _Item | StoreOutcome:
    """Work out the SOP class, instance and transfer syntax of one item to send."""
    if isinstance(source, Dataset):
        if "SOPClassUID" not in source or "SOPInstanceUID" not in source:
            uid = str(source.get("SOPInstanceUID", ""))
            return StoreOutcome(uid, None, False, "not sent: no SOP Class/Instance UID")
        return _plan_dataset(index, source)
    path = Path(source)
    try:
        meta = read_file_meta_info(path)
    except InvalidDicomError:
        meta = FileMetaDataset()  # no preamble: handled below
    except OSError as exc:
        return StoreOutcome("", None, False, f"not sent: cannot read {path}: {exc.strerror}")
    needed = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    if all(meta.get(kw) for kw in needed):
        return _Item(
            index,
            path,
            UID(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            UID(meta.TransferSyntaxUID),
        )
    # No usable File Meta Information (PS3.10 7.1): tolerate, decode and re-encode.
    try:
        ds = dcmread(path, force=True)
    except (OSError, InvalidDicomError, ValueError) as exc:
        return StoreOutcome("", None, False, f"not sent: cannot read {path}: {exc}")
    return _plan(index, ds)


def _contexts_for(items: list[_Item]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax), native LE data in one context offering
    the data's own syntax first, then explicit and implicit VR little endian (PS3.8 9.3.2.2).
    """
    syntaxes: dict[tuple[UID, str], list[UID]] = {}
    for item in items:
        for key in item.context_keys:
            listed = syntaxes.setdefault(key, [])
            if key[1] != _LE_GROUP:
                listed[:] = [UID(key[1])]
            elif item.transfer_syntax_uid in _NATIVE_LE and item.transfer_syntax_uid not in listed:
                listed.append(item.transfer_syntax_uid)
    contexts = []
    for (sop_class, group), listed in syntaxes.items():
        if group == _LE_GROUP:
            listed += [ts for ts in _NATIVE_LE if ts not in listed]
        contexts.append(build_context(sop_class, list(listed)))
    return contexts


def _batches(items: list[_Item]) -> list[list[_Item]]:
    """Split items so no association needs more than 128 presentation contexts.

    All items of one SOP class go to the same association; classes are packed in order of
    first appearance.
    """
    by_class: dict[UID, list[_Item]] = {}
    for item in items:
        by_class.setdefault(item.sop_class_uid, []).append(item)
    batches: list[list[_Item]] = []
    current: list[_Item] = []
    keys: set[tuple[UID, str]] = set()
    for class_items in by_class.values():
        class_keys = {key for item in class_items for key in item.context_keys}
        if current and len(keys | class_keys) > MAX_PRESENTATION_CONTEXTS:
            batches.append(current)
            current, keys = [], set()
        current += class_items
        keys |= class_keys
    if current:
        batches.append(current)
    return [sorted(batch, key=lambda i: i.index) for batch in batches]


def _exact_context(assoc: Association, item: _Item) -> bool:
    """Whether the peer accepted the item's SOP class in the item's own transfer syntax."""
    return any(
        cx.abstract_syntax == item.sop_class_uid
        and cx.transfer_syntax[0] == item.transfer_syntax_uid
        and cx.as_scu
        for cx in assoc.accepted_contexts
    )


def _payload(assoc: Association, item: _Item) -> Dataset | Path:
    """The file itself when it can be streamed, else a data set pynetdicom may re-encode."""
    if isinstance(item.source, Dataset):
        return item.source
    if _exact_context(assoc, item):
        return item.source
    return dcmread(item.source)


def _refusal(
    assoc: Association,
    watch: ConnectionWatch,
    peer: Peer,
    timeout_s: float,
    elapsed_s: float,
    tls: bool = False,
) -> DeliveryError:
    """The error for an association that was not established.

    pynetdicom aborts the association itself when the A-ASSOCIATE-AC/RJ does not come
    within the ACSE timeout (PS3.8 9.1.5, ARTIM), so an abort after the whole timeout is
    a peer that hangs, not one that aborted.
    """
    if not watch.opened:
        if tls:
            return DeliveryError(
                f"cannot connect to {peer} over TLS (refused, unreachable, timed out, or the"
                " TLS handshake failed: certificate not trusted or not for this host,"
                " protocol version or cipher suite refused; pynetdicom's log has the reason)"
            )
        return DeliveryError(f"cannot connect to {peer} (refused, unreachable or timed out)")
    if watch.rejection is not None:
        return DeliveryError(f"association rejected by {peer}: {watch.rejection}")
    if assoc.is_rejected:
        return DeliveryError(f"association rejected by {peer}")
    if elapsed_s >= timeout_s * 0.95:
        return DeliveryError(f"no association response from {peer} within {timeout_s:g} s")
    if assoc.is_aborted:
        return DeliveryError(
            f"association with {peer} aborted during negotiation"
            " (no acceptable presentation context, or the peer aborted)"
        )
    return DeliveryError(f"no association response from {peer} within {timeout_s:g} s")


class _Sender:
    """Sends batches over associations and collects outcomes in input order."""

    def __init__(
        self,
        ae: NodeAE,
        peer: Peer,
        total: int,
        timeout_s: float,
        max_pdu: int,
        progress: ProgressCallback | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ae = ae
        self.peer = peer
        self.tls = tls
        self.total = total
        self.timeout_s = timeout_s
        self.max_pdu = max_pdu
        self.progress = progress
        self.outcomes: dict[int, StoreOutcome] = {}

    def record(self, index: int, outcome: StoreOutcome) -> None:
        """Keep an outcome and report progress."""
        self.outcomes[index] = outcome
        if not outcome.delivered:
            logger.warning(
                "instance not delivered to %s: %s",
                self.peer,
                outcome.message,
                extra={"sop_instance_uid": outcome.sop_instance_uid},
            )
        if self.progress is not None:
            self.progress(len(self.outcomes), self.total)

    def send_batch(self, batch: list[_Item]) -> None:
        """Send one batch over one association, released at the end (PS3.8 7.2)."""
        watch = ConnectionWatch()
        started = time.monotonic()
        try:
            assoc = self.ae.associate(
                self.peer.host,
                self.peer.port,
                contexts=_contexts_for(batch),
                ae_title=self.peer.ae_title,
                max_pdu=self.max_pdu,
                evt_handlers=watch.handlers,
                tls_args=(self.tls, self.peer.host) if self.tls is not None else None,
            )
        except OSError as exc:  # the host name does not resolve
            raise DeliveryError(f"cannot connect to {self.peer}: {exc.strerror or exc}") from exc
        if not assoc.is_established:
            elapsed = time.monotonic() - started
            raise _refusal(assoc, watch, self.peer, self.timeout_s, elapsed, self.tls is not None)
        assoc.unbind(evt.EVT_PDU_RECV, watch.on_pdu)  # only needed during negotiation
        try:
            for msg_id, item in enumerate(batch, start=1):
                self.record(item.index, self.store(assoc, item, msg_id))
            with reactor_parked(assoc):
                assoc.release()
        finally:
            if assoc.is_alive() and not assoc.is_released:
                assoc.abort()

    def store(self, assoc: Association, item: _Item, msg_id: int) -> StoreOutcome:
        """C-STORE one instance; raises :class:`DeliveryError` when the association fails."""
        uid = item.sop_instance_uid
        try:
            payload = _payload(assoc, item)
        except (OSError, InvalidDicomError) as exc:
            return StoreOutcome(uid, None, False, f"not sent: cannot read file: {exc}")
        started = time.monotonic()
        try:
            with reactor_parked(assoc):
                rsp = assoc.send_c_store(payload, msg_id=msg_id & 0xFFFF)
        except RuntimeError as exc:  # the association ended under us
            raise DeliveryError(f"association with {self.peer} ended: {exc}") from exc
        except (ValueError, AttributeError) as exc:
            # No accepted presentation context, or data pynetdicom cannot encode.
            return StoreOutcome(uid, None, False, f"not sent: {exc}")
        status = rsp.get("Status") if rsp is not None else None
        if status is None:
            elapsed = time.monotonic() - started
            why = (
                f"no C-STORE response within {self.timeout_s:g} s"
                if elapsed >= self.timeout_s * 0.95
                else "the peer aborted or closed the connection"
            )
            stored = sum(o.delivered for o in self.outcomes.values())
            raise DeliveryError(
                f"association with {self.peer} failed: {why}"
                f" ({stored} of {self.total} instances stored)"
            )
        status = int(status)
        return StoreOutcome(uid, status, is_delivered(status), _describe_status(status, rsp))


def _make_ae(calling_ae_title: str, timeout_s: float) -> NodeAE:
    """An application entity with every timeout set (PS3.8 9.1.5 ARTIM, PS3.7 DIMSE)."""
    ae = NodeAE(ae_title=check_calling_ae_title(calling_ae_title))
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    return ae


def send_datasets(
    items: Iterable[Dataset | Path],
    peer: Peer,
    *,
    calling_ae_title: str = DEFAULT_CALLING_AE_TITLE,
    timeout_s: float = 30.0,
    max_pdu: int = DEFAULT_MAX_PDU,
    progress: ProgressCallback | None = None,
    tls: ssl.SSLContext | None = None,
) -> list[StoreOutcome]:
    """Send instances to a Storage SCP with C-STORE (PS3.4 Annex B, PS3.7 9.1.1).

    The association proposes only the SOP classes being sent, each in the transfer
    syntax of its data; uncompressed little endian data also offers explicit and
    implicit VR little endian (PS3.5 A.1, A.2). When more than 128 presentation
    contexts are needed the items are split over several associations, one after the
    other. Files (``Path``) are streamed without decoding when the peer accepts their
    own transfer syntax; otherwise they are read and re-encoded in an accepted one.
    TCP_NODELAY is set on every association socket.

    Parameters
    ----------
    items:
        Data sets (with file meta giving the Transfer Syntax UID; explicit VR little
        endian is assumed without it) or paths of DICOM files (PS3.10). Consumed into
        a list before the first association.
    peer:
        The Storage SCP.
    calling_ae_title:
        Our AE title.
    timeout_s:
        Connection, ACSE (association request/release), DIMSE (each C-STORE response)
        and network idle timeout, in seconds.
    max_pdu:
        Maximum PDU length we announce for PDUs sent to us (PS3.8 D.1), 0 for no limit.
        The PDUs we send are sized by the peer's announced maximum.
    progress:
        Called as ``progress(done, total)`` after each instance.
    tls:
        Connect over TLS with this client context (PS3.15 B.9; see
        :func:`dicom_ai_node.tls.client_context`): the peer's certificate must be
        trusted and name ``peer.host``.

    Returns
    -------
    list[StoreOutcome]
        One per item, in input order. Success and warning statuses (PS3.7 Annex C.4)
        are delivered; a failure status, or an item that could not be read or had no
        accepted presentation context, is ``delivered=False``.

    Raises
    ------
    DeliveryError
        If the connection fails, the association is rejected or aborted, or a
        timeout expires. The message names the peer but no patient data.
    ConfigError
        If ``calling_ae_title``, ``timeout_s`` or ``max_pdu`` is invalid.
    """
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, not {timeout_s!r}")
    if max_pdu < 0:
        raise ConfigError(f"max_pdu must be 0 (no limit) or positive, not {max_pdu!r}")
    sources = list(items)
    sender = _Sender(
        _make_ae(calling_ae_title, timeout_s),
        peer,
        len(sources),
        timeout_s,
        max_pdu,
        progress,
        tls,
    )
    planned: list[_Item] = []
    for index, source in enumerate(sources):
        plan = _plan(index, source)
        if isinstance(plan, StoreOutcome):
            sender.record(index, plan)
        else:
            planned.append(plan)
    batches = _batches(planned)
    logger.info(
        "sending %d instances to %s over %d association(s)", len(planned), peer, len(batches)
    )
    with streamed_files():
        for batch in batches:
            sender.send_batch(batch)
    return [sender.outcomes[i] for i in range(len(sources))]
