"""Audit: what this node reports, and when (IHE ATNA, PS3.15 A.5.3).

* Application Activity at start and stop of the node (:meth:`NodeAudit.start`, ``stop``).
* Security Alert (Node Authentication, minor failure) for each association rejected
  because the calling AE title is not known from the calling address
  (``dicom.accept_only_known_callers``), reported by the receive gate.
* DICOM Instances Transferred, action C, for instances received: read from the index
  once their series is complete (no longer receiving), one message per study and
  calling AE title, each new instance counted once (a duplicate adds no row). The
  position reached is kept in ``received.position`` beside the local audit log, so a
  restart neither repeats nor skips a study.
* DICOM Instances Transferred, action R, for results delivered: one message per study
  and destination after each delivery attempt that delivered something.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ConfigError
from ..settings import NodeSettings
from ..store.audit import StudyTransfer, delivered_studies, last_instance_pk, received_after
from ..store.db import Sessions
from .codes import NODE_AUTHENTICATION, ActionCode, Outcome
from .forward import SyslogForwarder
from .messages import (
    AuditSource,
    Participant,
    StudyRecord,
    application_activity,
    instances_transferred,
    patient_object_id,
    security_alert,
    user_authentication,
)
from .spool import Spool
from .syslog import APP_NAME, DEFAULT_PORTS, TlsTransport, Transport, UdpTransport, tls_context
from .trail import AuditLog, AuditTrail

__all__ = ["NodeAudit", "audit_paths"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Seconds between two looks at the index for newly received studies.
RECEIVED_SWEEP_S = 5.0
#: Instances read per look.
RECEIVED_BATCH = 5000


def audit_paths(settings: NodeSettings) -> tuple[Path, Path]:
    """The local audit log and the spool folder, defaults resolved.

    The log defaults to ``<storage.root>/../audit/audit.log`` (beside the index), the
    spool to ``spool/`` beside the log.
    """
    cfg = settings.audit
    if cfg.log_file:
        log_file = settings.path(cfg.log_file)
    else:
        log_file = settings.path(settings.storage.root).parent / "audit" / "audit.log"
    spool = settings.path(cfg.spool_dir) if cfg.spool_dir else log_file.parent / "spool"
    return log_file, spool


def _transport(settings: NodeSettings) -> Transport | None:
    cfg = settings.audit
    if cfg.syslog_transport == "off":
        return None
    port = cfg.syslog_port or DEFAULT_PORTS[cfg.syslog_transport]
    if cfg.syslog_transport == "udp":
        return UdpTransport(cfg.syslog_host, port)
    ca, cert, key = (
        str(settings.path(f)) if f else ""
        for f in (cfg.tls_ca_file, cfg.tls_cert_file, cfg.tls_key_file)
    )
    try:
        context = tls_context(ca, cert, key)
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"audit TLS files unusable: {exc}") from exc
    return TlsTransport(cfg.syslog_host, port, context)


def _launcher() -> Participant:
    """The operating system user running the node (PS3.15 A.5.3.1: Application Launcher)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = f"uid {os.getuid()}"
    return Participant(user, is_requestor=True)


def _peer_host(destination: str) -> tuple[str, str]:
    """AE title and host of ``AE@HOST:PORT``."""
    ae_title, _, address = destination.partition("@")
    return ae_title, address.rpartition(":")[0] or address


class NodeAudit:
    """The node's audit trail and the events it records.

    Parameters
    ----------
    settings:
        The node's settings (``[audit]``, the AE title, the AE table).
    sessions:
        The index, read for the studies received and delivered.
    clock:
        Current UTC time.

    Raises
    ------
    ConfigError
        When the local audit log cannot be opened or the TLS files cannot be read.
    """

    def __init__(
        self,
        settings: NodeSettings,
        sessions: Sessions,
        clock: Callable[[], dt.datetime],
    ) -> None:
        cfg = settings.audit
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        log_file, spool_dir = audit_paths(settings)
        self.folder = log_file.parent
        transport = _transport(settings)
        forwarder = None
        if transport is not None:
            forwarder = SyslogForwarder(transport, Spool(spool_dir, cfg.spool_max_mb * MIB))
        self.hostname = socket.gethostname()
        self.trail = AuditTrail(
            AuditLog(log_file) if cfg.local_log else None,
            forwarder,
            hostname=self.hostname,
            procid=str(os.getpid()),
            clock=clock,
        )
        ae_title = settings.dicom.ae_title
        self.source = AuditSource(cfg.source_id or ae_title, cfg.enterprise_site_id)
        self.node = Participant.application_entity(
            ae_title, is_requestor=False, host=self.hostname, user_name=APP_NAME
        )
        self._position_path = self.folder / "received.position"
        self._position = 0
        self._next_sweep = 0.0

    # -- application activity --------------------------------------------------------------
    def start(self) -> None:
        """Start forwarding and record Application Start (PS3.15 A.5.3.1)."""
        self.trail.start()
        self._position = self._load_position()
        self.trail.record(
            application_activity(
                started=True,
                application=self.node,
                launcher=_launcher(),
                source=self.source,
                at=self.clock(),
            )
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Record what was received meanwhile and Application Stop, then close the trail."""
        try:
            self.received(force=True)
        except Exception as exc:  # the stop record matters more
            log.error("cannot audit the studies received: %s", exc)
        self.trail.record(
            application_activity(
                started=False,
                application=self.node,
                launcher=_launcher(),
                source=self.source,
                at=self.clock(),
            )
        )
        self.trail.close(timeout_s)

    # -- security alerts -------------------------------------------------------------------
    def unknown_caller(self, calling_ae_title: str, address: str) -> None:
        """Security Alert: an association refused, calling AE title not recognised."""
        self._association_rejected(
            calling_ae_title,
            address,
            "association rejected (A-ASSOCIATE-RJ result 1, source 1, reason 3; PS3.8 9.3.4): "
            f"calling AE title {calling_ae_title!r} not recognised from {address}",
        )

    def wrong_called(self, called_ae_title: str, calling_ae_title: str, address: str) -> None:
        """Security Alert: an association refused, called AE title not recognised."""
        self._association_rejected(
            calling_ae_title,
            address,
            "association rejected (A-ASSOCIATE-RJ result 1, source 1, reason 7; PS3.8 9.3.4): "
            f"called AE title {called_ae_title!r} is not this node's, from "
            f"{calling_ae_title!r} at {address}",
        )

    def _association_rejected(self, calling_ae_title: str, address: str, description: str) -> None:
        """Security Alert (PS3.15 A.5.3.11) for an A-ASSOCIATE-RQ the listener refused."""
        self.trail.record(
            security_alert(
                event_type=NODE_AUTHENTICATION,
                reporter=self.node,
                performers=[
                    Participant.application_entity(
                        calling_ae_title, is_requestor=True, host=address
                    )
                ],
                subject_node=address,
                subject_name=calling_ae_title,
                description=description,
                source=self.source,
                at=self.clock(),
            )
        )

    def tls_failure(self, address: str, reason: str) -> None:
        """Security Alert: a TLS handshake refused (PS3.15 A.5.3.11, node authentication)."""
        self.trail.record(
            security_alert(
                event_type=NODE_AUTHENTICATION,
                reporter=self.node,
                performers=[Participant(address, True, network_access_point=address)],
                subject_node=address,
                subject_name=address,
                description=f"TLS connection from {address} refused: {reason}",
                source=self.source,
                at=self.clock(),
            )
        )

    def user_refused(self, username: str, address: str, reason: str) -> None:
        """User Authentication failed: an association's user identity refused (A.5.3.12)."""
        user = Participant(username or "(none)", True, network_access_point=address)
        self.trail.record(
            user_authentication(
                login=True,
                user=user,
                node=self.node,
                source=self.source,
                at=self.clock(),
                outcome=Outcome.MINOR_FAILURE,
            )
        )

    # -- instances transferred -------------------------------------------------------------
    def received(self, *, force: bool = False) -> int:
        """Record the studies received since the last look (at most every few seconds).

        Returns
        -------
        int
            How many messages were recorded.
        """
        now = time.monotonic()
        if not force and now < self._next_sweep:
            return 0
        self._next_sweep = now + RECEIVED_SWEEP_S
        transfers, position = received_after(self.sessions, self._position, RECEIVED_BATCH)
        at = self.clock()
        for transfer in transfers:
            known = self.settings.known_ae(transfer.peer)
            sender = Participant.application_entity(
                transfer.peer, is_requestor=True, host=known.host if known else ""
            )
            self._transferred(ActionCode.CREATE, sender, self.node, transfer, at)
        if position != self._position:
            self._save_position(position)
            self._position = position
        return len(transfers)

    def delivered(self, destination: str, delivery_pks: Sequence[int]) -> None:
        """Record the studies whose results one delivery attempt delivered."""
        at = self.clock()
        sender = Participant.application_entity(
            self.settings.send.calling_ae_title or self.settings.dicom.ae_title,
            is_requestor=True,
            host=self.hostname,
            user_name=APP_NAME,
        )
        try:
            transfers = delivered_studies(self.sessions, delivery_pks)
        except Exception as exc:  # the delivery stands; only its audit message is lost
            log.error("cannot audit a delivery to %s: %s", destination, exc)
            return
        for transfer in transfers:
            ae_title, host = _peer_host(transfer.peer)
            receiver = Participant.application_entity(ae_title, is_requestor=False, host=host)
            self._transferred(ActionCode.READ, sender, receiver, transfer, at)

    def _transferred(
        self,
        action: ActionCode,
        sender: Participant,
        receiver: Participant,
        transfer: StudyTransfer,
        at: dt.datetime,
    ) -> None:
        self.trail.record(
            instances_transferred(
                action=action,
                sender=sender,
                receiver=receiver,
                study=StudyRecord(transfer.study_instance_uid, transfer.sop_classes),
                patient_id=patient_object_id(transfer.patient_id, transfer.issuer_of_patient_id),
                source=self.source,
                at=at,
            )
        )

    # -- where the received sweep is ---------------------------------------------------------
    def _load_position(self) -> int:
        """The last instance key reported; a new audit folder starts at the newest instance."""
        try:
            return int(self._position_path.read_text().strip())
        except FileNotFoundError:
            position = last_instance_pk(self.sessions)
        except (OSError, ValueError) as exc:
            log.error("audit position unreadable, starting at the newest instance: %s", exc)
            position = last_instance_pk(self.sessions)
        self._save_position(position)
        return position

    def _save_position(self, position: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = self._position_path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{position}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self._position_path)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
