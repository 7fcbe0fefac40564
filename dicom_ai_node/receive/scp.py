"""Receive: the Storage and Verification SCP (PS3.4 Annex A and B) on pynetdicom.

A C-STORE is answered Success only after the bytes as received are durable on disk and
the instance is indexed in one committed transaction; any failure before that leaves
no file and no row and returns the failure status named in :mod:`.status`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.sop_class import _STORAGE_CLASSES, Verification
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StorageError, StorageFullError
from ..route.header import header_of
from ..store.files import FileStore, valid_uid
from ..store.index import (
    IndexOutcome,
    InstanceRecord,
    index_instance,
    record_event,
)
from .locks import KeyedLocks
from . import status

__all__ = ["ScpConfig", "StorageSCP", "storage_sop_classes"]

log = logging.getLogger(__name__)


def storage_sop_classes() -> list[str]:
    """Every storage SOP class known to pydicom or pynetdicom (PS3.4 B.5), sorted."""
    known = {uid for uid, entry in UID_dictionary.items() if entry[1] == "SOP Class" and "Storage" in entry[0]}
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
    max_associations: int = 16
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    late_instance_policy: str = "rerun"


def _nodelay(event: evt.Event) -> None:
    """Turn Nagle's algorithm off on the accepted socket (~40 ms per message otherwise)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # pynetdicom polls its queues; 1 ms per idle loop costs ~30% of throughput here
    event.assoc.dul._run_loop_delay = 0.0001


def _dataset_offset(raw: bytes) -> int:
    """Where the data set starts in preamble + 'DICM' + file meta (PS3.10 7.1)."""
    # (0002,0000) FileMetaInformationGroupLength is the first element: UL value at 140..144
    return 144 + int.from_bytes(raw[140:144], "little")


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword, "")
    return str(value if value is not None else "")[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class StorageSCP:
    """The node's DICOM listener.

    Parameters
    ----------
    config:
        Listener settings.
    files:
        Where instance files go.
    sessions:
        The index's session factory.
    clock:
        Returns the current UTC time (tests pass their own).
    on_stored:
        Called after a new instance is indexed (wakes the assembler), with its series UID.
    """

    def __init__(
        self,
        config: ScpConfig,
        files: FileStore,
        sessions: sessionmaker[Session],
        clock: Callable[[], dt.datetime],
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.files = files
        self.sessions = sessions
        self.clock = clock
        self.on_stored = on_stored
        self._server: ThreadedAssociationServer | None = None
        self._series_seen: set[str] = set()
        self._lock = threading.Lock()
        self._sop_locks = KeyedLocks()
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        ae.require_called_aet = cfg.require_called_ae_title
        ae.maximum_pdu_size = cfg.max_pdu
        ae.maximum_associations = cfg.max_associations
        ae.acse_timeout = cfg.acse_timeout_s
        ae.dimse_timeout = cfg.dimse_timeout_s
        ae.network_timeout = cfg.network_timeout_s
        syntaxes = [str(ts) for ts in AllTransferSyntaxes]
        ae.add_supported_context(Verification)
        for uid in storage_sop_classes():
            ae.add_supported_context(uid, syntaxes)
        return ae

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in background threads."""
        handlers = [
            (evt.EVT_CONN_OPEN, _nodelay),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
        ]
        self._server = self.ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers
        )
        log.info(
            "listening",
            extra={"ae_title": self.config.ae_title, "host": self.config.host, "port": self.port},
        )

    def stop(self) -> None:
        """Stop accepting and close every association."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()

    def handle_echo(self, event: evt.Event) -> int:
        """C-ECHO (PS3.4 A.4): the node is up."""
        return status.SUCCESS

    def handle_store(self, event: evt.Event) -> int | tuple[int, Dataset]:
        """C-STORE (PS3.4 B.2): store the bytes as received, index them, then answer.

        Returns
        -------
        int
            A status from :mod:`.status`.
        """
        try:
            self.files.check_free_space()
        except StorageFullError:
            log.warning("refused instance: storage below its free-space reserve")
            return status.OUT_OF_RESOURCES
        req = event.request
        calling = event.assoc.requestor.ae_title.strip()
        try:
            raw = event.encoded_dataset(include_meta=True)
            ds = dcmread(io.BytesIO(raw), stop_before_pixels=True, defer_size=4096)
        except (InvalidDicomError, ValueError, EOFError, OSError, AttributeError, KeyError) as exc:
            log.warning("cannot parse data set: %s", type(exc).__name__)
            return status.CANNOT_UNDERSTAND
        problem = self._check_uids(ds, str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID))
        if problem is not None:
            return problem
        return self._store(ds, raw, calling)

    def _check_uids(self, ds: Dataset, command_class: str, command_instance: str) -> int | None:
        sop_uid = ds.get("SOPInstanceUID")
        uids = (ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), sop_uid)
        if not all(valid_uid(str(u)) for u in uids if u is not None) or None in uids:
            log.warning("refused instance: missing or non-conformant UID")
            return status.CANNOT_UNDERSTAND
        if str(sop_uid) != command_instance or str(ds.get("SOPClassUID", "")) != command_class:
            log.warning("refused instance %s: data set UIDs differ from the command", command_instance)
            return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        return None

    def _record(self, ds: Dataset, relative: str, size: int, sha256: str, calling: str) -> InstanceRecord:
        series_uid = str(ds.SeriesInstanceUID)
        with self._lock:
            first = series_uid not in self._series_seen
            self._series_seen.add(series_uid)
        return InstanceRecord(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=series_uid,
            path=relative,
            size=size,
            sha256=sha256,
            received_at=self.clock(),
            calling_ae_title=calling,
            patient_id=_text(ds, "PatientID"),
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
            patient_name=_text(ds, "PatientName", 324),
            study_date=_text(ds, "StudyDate", 8),
            study_description=_text(ds, "StudyDescription"),
            accession_number=_text(ds, "AccessionNumber", 16),
            modality=_text(ds, "Modality", 16),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            instance_number=_int(ds, "InstanceNumber"),
            expected_count=_int(ds, "NumberOfSeriesRelatedInstances"),
            header=header_of(ds) if first else {},
        )

    def _store(self, ds: Dataset, raw: bytes, calling: str) -> int:
        study_uid, series_uid, sop_uid = (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
        )
        sha256 = hashlib.sha256(raw[_dataset_offset(raw) :]).hexdigest()
        relative = self.files.instance_path(study_uid, series_uid, sop_uid, sha256)
        with self._sop_locks.hold(sop_uid):
            # a file at this content-addressed path can only be the same bytes, already
            # acknowledged or orphaned by a crash: never delete it on a later failure
            ours = not self.files.absolute(relative).exists()
            try:
                size = self.files.write(relative, raw)
            except StorageError as exc:  # includes StorageFullError
                log.error("refused instance %s: %s", sop_uid, exc)
                return status.OUT_OF_RESOURCES
            record = self._record(ds, relative, size, sha256, calling)
            try:
                outcome = index_instance(
                    self.sessions, record, late_policy=self.config.late_instance_policy
                )
            except StorageError as exc:
                if ours:
                    self.files.remove(relative)
                log.error("refused instance %s: %s", sop_uid, exc)
                return status.OUT_OF_RESOURCES
            if outcome is IndexOutcome.CONFLICT:
                if ours:
                    self.files.remove(relative)
                return self._answer_known(sop_uid, study_uid, series_uid, same=False)
            if outcome is IndexOutcome.DUPLICATE:
                return self._answer_known(sop_uid, study_uid, series_uid, same=True)
        if outcome is IndexOutcome.NEW and self.on_stored is not None:
            self.on_stored(series_uid)
        return status.SUCCESS

    def _answer_known(self, sop_uid: str, study_uid: str, series_uid: str, *, same: bool) -> int:
        if same:
            log.info("duplicate instance %s: already stored, nothing changed", sop_uid)
            return status.SUCCESS
        log.warning("refused instance %s: SOP Instance UID stored before with other content", sop_uid)
        try:
            with self.sessions.begin() as session:
                record_event(
                    session,
                    self.clock(),
                    study_uid,
                    "conflict",
                    f"instance {sop_uid} re-sent with different content; first one kept",
                    series_uid,
                )
        except Exception:  # noqa: BLE001 - the status answer matters more than the history line
            log.exception("cannot record conflict event")
        return status.DUPLICATE_SOP_INSTANCE

    def info(self) -> dict[str, Any]:
        """What the listener is (for logs and the CLI)."""
        return {"ae_title": self.config.ae_title, "host": self.config.host, "port": self.port}
