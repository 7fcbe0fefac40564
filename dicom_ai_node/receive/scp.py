"""Receive: the Storage and Verification SCP (PS3.4 Annex A and B) on pynetdicom.

A C-STORE is answered Success only after the bytes as received are durable on disk and
the instance is indexed in one committed transaction (:mod:`dicom_ai_node.store.ingest`);
any failure before that leaves no file and no row and returns the failure status named
in :mod:`.status`. This module checks what arrived and decides the status.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import _STORAGE_CLASSES
from pynetdicom.transport import ThreadedAssociationServer

from ..domain import AssociationSummary
from ..errors import StorageError, StorageFullError
from ..metrics import NodeMetrics
from ..store.files import TempFile, valid_uid
from ..store.index import IndexOutcome, SeriesAttrs
from ..store.ingest import Ingest, InstanceAttrs, NotStored
from . import status
from .attrs import PARSE_ERRORS, inflated_size_within, read_instance, read_series
from .gate import Limits
from .part10 import file_head
from .server import start_server
from .watch import AssociationWatch

__all__ = ["ScpConfig", "StorageSCP", "storage_sop_classes"]

log = logging.getLogger(__name__)


def storage_sop_classes() -> list[str]:
    """Every storage SOP class known to pydicom or pynetdicom (PS3.4 B.5), sorted; not
    Storage Commitment (PS3.4 J), an N-ACTION service the node does not provide."""
    known = {
        uid
        for uid, entry in UID_dictionary.items()
        if entry[1] == "SOP Class" and "Storage" in entry[0] and "Commitment" not in entry[0]
    }
    known |= {str(uid) for uid in _STORAGE_CLASSES.values()}
    return sorted(known)


@dataclass(frozen=True)
class ScpConfig:
    """What the SCP needs from the settings."""

    ae_title: str
    host: str
    port: int
    require_called_ae_title: bool = True
    max_pdu: int = 131072
    #: What the listener bounds: associations, waiting connections, message size, callers.
    limits: Limits = field(default_factory=Limits)
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    #: A TLS listener on ``tls_port`` with this context (PS3.15 B.9), if any.
    tls: ssl.SSLContext | None = None
    tls_port: int = 2762
    #: Whether the plain listener on ``port`` opens (False: TLS only).
    plaintext: bool = True
    #: Called with the caller's address and the reason of each failed TLS handshake.
    on_tls_failure: Callable[[str, str], None] | None = None
    #: Called with the summary of each association (or refused connection) as it ends.
    on_association_end: Callable[[AssociationSummary], None] | None = None


def _nodelay(event: evt.Event) -> None:
    """Turn Nagle's algorithm off on the accepted socket (~40 ms per message otherwise).

    The event-driven reactors (:mod:`.server`) do this themselves; this handler serves
    pynetdicom's own reactors, used with a pynetdicom version they are not validated with.
    """
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # pynetdicom's DUL polls its queues; 1 ms per idle loop costs ~30% of throughput here
    event.assoc.dul._run_loop_delay = 0.0001


#: Verification SOP Class (PS3.4 A.4).
VERIFICATION = "1.2.840.10008.1.1"
#: Series whose patient/study/series values are kept, to read only instance values after.
SERIES_CACHE_SIZE = 1024


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()  # releases the GIL: runs beside the file write


def _dataset_bytes(event: evt.Event) -> bytes:
    """The C-STORE data set as received (PS3.7 9.1.1.1), without copying it when possible."""
    data = cast(C_STORE, event.request).DataSet
    if isinstance(data, BytesIO):
        return data.getvalue()
    return bytes(event.encoded_dataset(include_meta=False))


class StorageSCP:
    """The node's DICOM listener.

    Parameters
    ----------
    config:
        Listener settings.
    ingest:
        Where received instances are stored and indexed.
    metrics:
        Where associations, C-STOREs and their bytes and times are counted (a registry
        of its own when not given).
    """

    def __init__(
        self, config: ScpConfig, ingest: Ingest, *, metrics: NodeMetrics | None = None
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.metrics = metrics if metrics is not None else NodeMetrics(process=False)
        self.watch = AssociationWatch(self.metrics, config.on_association_end, ingest.clock)
        self.metrics.watch_associations(self._active)
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None
        self._series: OrderedDict[str, SeriesAttrs] = OrderedDict()
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(  # a hash per association
            max_workers=max(1, config.limits.max_associations), thread_name_prefix="store"
        )
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        ae.require_called_aet = cfg.require_called_ae_title
        ae.maximum_pdu_size = cfg.max_pdu
        ae.maximum_associations = cfg.limits.max_associations
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        ae.network_timeout = cfg.network_timeout_s
        syntaxes = [str(ts) for ts in AllTransferSyntaxes]
        ae.add_supported_context(VERIFICATION)
        for uid in storage_sop_classes():
            ae.add_supported_context(uid, syntaxes)
        return ae

    def _active(self) -> int:
        """Associations served now (made, not yet ended)."""
        return sum(1 for a in self.ae.active_associations if a.is_acceptor)

    @property
    def port(self) -> int:
        """The plain listener's port actually bound (useful when configured as 0)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int:
        """The TLS listener's port actually bound."""
        if self._tls_server is None:
            return self.config.tls_port
        return int(self._tls_server.server_address[1])

    def start(self) -> None:
        """Bind and serve in background threads: the plain listener, the TLS one, or both."""
        cfg = self.config
        handlers = [
            (evt.EVT_CONN_OPEN, _nodelay),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
        ]
        if cfg.plaintext:
            self._server = start_server(
                self.ae, (cfg.host, cfg.port), handlers, cfg.limits, watch=self.watch
            )
            log.info(
                "listening", extra={"ae_title": cfg.ae_title, "host": cfg.host, "port": self.port}
            )
        if cfg.tls is not None:
            self._tls_server = start_server(
                self.ae,
                (cfg.host, cfg.tls_port),
                handlers,
                cfg.limits,
                tls=cfg.tls,
                on_tls_failure=cfg.on_tls_failure,
                watch=self.watch,
            )
            log.info(
                "listening with TLS",
                extra={"ae_title": cfg.ae_title, "host": cfg.host, "port": self.tls_port},
            )

    def stop(self) -> None:
        """Stop accepting and close every association."""
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
        self._server = self._tls_server = None
        self.ae.shutdown()
        self._workers.shutdown(wait=True)

    def handle_echo(self, event: evt.Event) -> int:
        """C-ECHO (PS3.4 A.4): the node is up."""
        return status.SUCCESS

    def handle_store(self, event: evt.Event) -> int | tuple[int, Dataset]:
        """C-STORE (PS3.4 B.2): store the bytes as received, index them, then answer.

        Each request is counted (stored, duplicate or refused) and timed.

        Returns
        -------
        int
            A status from :mod:`.status`.
        """
        started = time.perf_counter()
        answer: int | tuple[int, Dataset] | None = None
        try:
            answer = self._handle_store(event)
            return answer
        finally:  # an exception is answered 0xC211 by pynetdicom: refused
            if answer == status.SUCCESS:  # counted stored or duplicate by _store
                self.watch.stored(event.assoc)
            else:
                self.metrics.instance_received("refused")
            self.metrics.cstore_handled(time.perf_counter() - started)

    def _handle_store(self, event: evt.Event) -> int | tuple[int, Dataset]:
        try:
            self.ingest.check_free_space()
        except StorageFullError:
            log.warning("refused instance: storage below its free-space reserve")
            return status.OUT_OF_RESOURCES
        req = cast(C_STORE, event.request)
        sop_class, sop_uid = str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID)
        syntax = str(event.context.transfer_syntax)
        if sop_class != event.context.abstract_syntax:
            # a presentation context carries one abstract syntax, the SOP Class of its
            # messages (PS3.8 7.1.1.13); any other is answered as a mismatch (PS3.4 B.2.3)
            log.warning(
                "refused instance: SOP Class UID %s on a context negotiated for %s",
                sop_class if valid_uid(sop_class) else "(non-conformant)",
                event.context.abstract_syntax,
            )
            return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        try:
            body = _dataset_bytes(event)
        except PARSE_ERRORS as exc:
            log.warning("cannot read data set: %s", type(exc).__name__)
            return status.CANNOT_UNDERSTAND
        self.metrics.bytes_received(len(body))
        # the data set is hashed on another thread while this one writes the temp file
        # (Ingest.store makes it durable later) and reads the header; handing the
        # write to a thread as well costs more in hand-offs than it overlaps
        temp: TempFile | None = None
        hashing: Future[str] | None = None
        if valid_uid(sop_uid):
            hashing = self._workers.submit(_sha256, body)
            try:
                temp = self.ingest.write_temp([file_head(sop_class, sop_uid, syntax), body])
            except StorageError as exc:  # includes StorageFullError
                log.error("refused instance %s: %s", sop_uid, exc)
                return status.OUT_OF_RESOURCES
        try:
            return self._receive(event, body, syntax, temp, hashing)
        except BaseException:
            self.ingest.discard(temp)  # pynetdicom answers 0xC211 for the exception
            raise

    def _receive(
        self,
        event: evt.Event,
        body: bytes,
        syntax: str,
        temp: TempFile | None,
        hashing: Future[str] | None,
    ) -> int:
        req = cast(C_STORE, event.request)
        sop_class, sop_uid = str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID)
        try:
            instance, series = self._read(body, syntax)
            if syntax == DeflatedExplicitVRLittleEndian and not inflated_size_within(
                body, self.config.limits.max_message_bytes
            ):  # the bound on a data set applies to it inflated too (PS3.5 A.5)
                log.warning("refused instance: a deflated data set larger than its bound")
                return self._refuse(temp, status.OUT_OF_RESOURCES)
        except PARSE_ERRORS as exc:
            log.warning("cannot parse data set: %s", type(exc).__name__)
            return self._refuse(temp, status.CANNOT_UNDERSTAND)
        problem = self._check_uids(instance, sop_class, sop_uid)
        if problem is not None or temp is None or hashing is None:
            return self._refuse(temp, problem or status.CANNOT_UNDERSTAND)
        calling = event.assoc.requestor.ae_title.strip()
        return self._store(instance, series, syntax, temp, hashing.result(), calling)

    def _refuse(self, temp: TempFile | None, answer: int) -> int:
        """Answer a refusal, after removing the temp file written meanwhile (if any)."""
        self.ingest.discard(temp)
        return answer

    def _read(self, body: bytes, syntax: str) -> tuple[InstanceAttrs, SeriesAttrs]:
        """Instance values, plus the series values (decoded once per series, then cached)."""
        instance = read_instance(body, syntax)
        with self._lock:
            series = self._series.get(instance.series_instance_uid)
            if series is not None:
                self._series.move_to_end(instance.series_instance_uid)
        if series is None:
            instance, series = read_series(body, syntax)
        return instance, series

    def _remember(self, series_uid: str, series: SeriesAttrs) -> None:
        """Keep a series' values once its row exists (most recently used first out last)."""
        with self._lock:
            self._series[series_uid] = series
            self._series.move_to_end(series_uid)
            while len(self._series) > SERIES_CACHE_SIZE:
                self._series.popitem(last=False)

    def _check_uids(
        self, instance: InstanceAttrs, command_class: str, command_instance: str
    ) -> int | None:
        uids = (
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid,
        )
        if not all(valid_uid(u) for u in uids):
            log.warning("refused instance: missing or non-conformant UID")
            return status.CANNOT_UNDERSTAND
        if instance.sop_instance_uid != command_instance or instance.sop_class_uid != command_class:
            log.warning(
                "refused instance %s: data set UIDs differ from the command", command_instance
            )
            return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        return None

    def _store(
        self,
        instance: InstanceAttrs,
        series: SeriesAttrs,
        syntax: str,
        temp: TempFile,
        sha256: str,
        calling: str,
    ) -> int:
        """Store and index the instance (:meth:`.Ingest.store`); the status its outcome means."""
        sop_uid = instance.sop_instance_uid
        try:
            outcome = self.ingest.store(
                temp,
                sha256,
                instance,
                series,
                transfer_syntax_uid=syntax,
                calling_ae_title=calling,
            )
        except NotStored as exc:  # includes a full volume
            log.error("refused instance %s: %s", sop_uid, exc)
            return status.OUT_OF_RESOURCES
        if outcome is IndexOutcome.CONFLICT:
            log.warning(
                "refused instance %s: SOP Instance UID stored before with other content", sop_uid
            )
            return status.DUPLICATE_SOP_INSTANCE
        self._remember(instance.series_instance_uid, series)
        if outcome is IndexOutcome.DUPLICATE:
            log.info("duplicate instance %s: already stored, nothing changed", sop_uid)
        self.metrics.instance_received(
            "duplicate" if outcome is IndexOutcome.DUPLICATE else "stored"
        )
        return status.SUCCESS

    def info(self) -> dict[str, Any]:
        """What the listener is (for logs and the CLI)."""
        info: dict[str, Any] = {"ae_title": self.config.ae_title, "host": self.config.host}
        if self.config.plaintext:
            info["port"] = self.port
        if self.config.tls is not None:
            info["tls_port"] = self.tls_port
        return info
