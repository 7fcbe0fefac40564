"""Audit over real sockets: syslog over UDP and TLS with a spool while the collector is down,
and the node auditing an unknown caller it rejects, a study it receives and the results it
delivers (IHE ATNA, DICOM PS3.15 A.5-A.7)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt

from dicom_ai_node.app import Node
from dicom_ai_node.audit.forward import SyslogForwarder
from dicom_ai_node.audit.messages import AuditSource, Participant, application_activity
from dicom_ai_node.audit.node import audit_paths
from dicom_ai_node.audit.spool import Spool
from dicom_ai_node.audit.syslog import BOM, TlsTransport, UdpTransport, syslog_message, tls_context
from dicom_ai_node.audit.validate import validate
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.db import utcnow
from dicom_ai_node.testing.series import CANARY_PATIENT_ID, make_ct_series, phi_canaries_in

from ..conftest import free_port, require_exe, stop_process, write_node_config
from .test_pipeline import start_storescp, wait_until

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"


def _frames(count: int) -> list[bytes]:
    node = Participant.application_entity("AI_NODE", is_requestor=False, host="localhost")
    return [
        syslog_message(
            application_activity(
                started=n % 2 == 0, application=node, source=AuditSource("AI_NODE"), at=utcnow()
            ).xml,
            severity=5,
            at=utcnow(),
            hostname="localhost",
            procid=str(n),
        )
        for n in range(count)
    ]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _forwarder(transport: Any, spool: Spool) -> SyslogForwarder:
    return SyslogForwarder(transport, spool, retry_initial_s=0.05, retry_max_s=0.2)


def _msg_of(frame: bytes) -> bytes:
    """The XML of an RFC 5424 message (after the header and the BOM)."""
    head, _, msg = frame.partition(b" - " + BOM)
    assert head.startswith(b"<85>1 ") and head.endswith(b"DICOM+RFC3881"), head
    return msg


def test_udp_messages_wait_in_the_spool_until_the_collector_listens(tmp_path: Path) -> None:
    port = _free_udp_port()  # nobody listens: ICMP port unreachable
    spool = Spool(tmp_path / "spool", 1 << 20)
    forwarder = _forwarder(UdpTransport("127.0.0.1", port), spool)
    frames = _frames(4)
    collector: socket.socket | None = None
    forwarder.start()
    try:
        for frame in frames[:3]:
            forwarder.submit(frame)
        wait_until(lambda: len(spool) == 3, 10, "three messages spooled")
        collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        collector.bind(("127.0.0.1", port))
        collector.settimeout(10)
        got = [collector.recv(65535) for _ in range(3)]
        assert got == frames[:3]  # oldest first, byte for byte
        wait_until(lambda: len(spool) == 0, 5, "spool drained")
        forwarder.submit(frames[3])
        assert collector.recv(65535) == frames[3]
        assert all(validate(_msg_of(f)) == [] for f in got)
    finally:
        forwarder.stop(timeout_s=2)
        if collector is not None:
            collector.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl."""
    cert, key = tmp_path / "collector.pem", tmp_path / "collector.key"
    subprocess.run(
        [
            require_exe("openssl"),
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class TlsCollector:
    """An RFC 5425 collector: TLS, octet-counted frames, one connection at a time."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(0.2)
            try:
                conn = self.context.wrap_socket(raw, server_side=True)
            except OSError:  # a client that does not trust us, or gave up
                raw.close()
                continue
            with contextlib.suppress(OSError), conn:
                self._read(conn)

    def _read(self, conn: ssl.SSLSocket) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            while b" " in buffer:  # MSG-LEN SP SYSLOG-MSG (RFC 5425 4.3)
                length, _, rest = buffer.partition(b" ")
                if len(rest) < int(length):
                    break
                self.frames.append(rest[: int(length)])
                buffer = rest[int(length) :]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def test_tls_messages_wait_in_the_spool_until_the_collector_is_back(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    port = free_port()
    spool = Spool(tmp_path / "spool", 1 << 20)
    transport = TlsTransport("127.0.0.1", port, tls_context(str(cert)), timeout_s=2)
    forwarder = _forwarder(transport, spool)
    frames = _frames(5)
    collectors: list[TlsCollector] = []
    forwarder.start()
    try:
        for frame in frames[:3]:  # collector down: connection refused
            forwarder.submit(frame)
        wait_until(lambda: len(spool) == 3, 10, "three messages spooled")
        collectors.append(TlsCollector(port, cert, key))
        wait_until(lambda: collectors[0].frames == frames[:3], 10, "spooled messages delivered")
        assert len(spool) == 0
        forwarder.submit(frames[3])
        wait_until(lambda: collectors[0].frames == frames[:4], 10, "a new message")
        collectors.pop().close()  # the collector restarts: the node reconnects
        collectors.append(TlsCollector(port, cert, key))
        forwarder.submit(frames[4])
        wait_until(lambda: frames[4] in collectors[0].frames, 10, "after a reconnect")
        assert all(validate(_msg_of(f)) == [] for f in frames)
    finally:
        forwarder.stop(timeout_s=2)
        for collector in collectors:
            collector.close()


def test_a_collector_whose_certificate_is_not_trusted_gets_nothing(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    port = free_port()
    collector = TlsCollector(port, cert, key)
    spool = Spool(tmp_path / "spool", 1 << 20)
    forwarder = _forwarder(TlsTransport("127.0.0.1", port, tls_context(), timeout_s=2), spool)
    forwarder.start()
    try:
        forwarder.submit(_frames(1)[0])  # the system CAs do not know the self-signed one
        wait_until(lambda: len(spool) == 1, 10, "message spooled")
        assert collector.frames == []
    finally:
        forwarder.stop(timeout_s=2)
        collector.close()


# -- the node -------------------------------------------------------------------------------
def _audit_log(node: Node) -> list[ET.Element]:
    """Every record of the node's local audit log; each must validate."""
    log_file, _ = audit_paths(node.settings)
    if not log_file.exists():
        return []
    records = []
    for line in log_file.read_bytes().splitlines():
        assert validate(line) == [], line[:200]
        records.append(ET.fromstring(line))
    return records


def _event(root: ET.Element) -> tuple[str | None, str | None]:
    ident = root.find("EventIdentification")
    assert ident is not None
    event_id = ident.find("EventID")
    assert event_id is not None
    return event_id.get("csd-code"), ident.get("EventActionCode")


@pytest.fixture
def strict_node(tmp_path: Path) -> Iterator[tuple[Node, socket.socket]]:
    """A node accepting only PACS from 127.0.0.1, forwarding audit messages over UDP."""
    port, collector_port = free_port(), _free_udp_port()
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", collector_port))
    collector.settimeout(10)
    audit = ["[audit]", 'syslog_transport = "udp"', 'syslog_host = "127.0.0.1"']
    extra = "\n".join([*audit, f"syslog_port = {collector_port}"])
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", free_port())], 0.5, extra
    )
    env = {"DICOM_AI_NODE_DICOM_ACCEPT_ONLY_KNOWN_CALLERS": "true"}
    node = Node(load_settings(config, env=env))
    node.start()
    try:
        yield node, collector
    finally:
        node.stop()
        collector.close()


def _associate(calling: str, called: str, port: int) -> tuple[Any, list[Any]]:
    """Associate for Verification; returns the association and the PDUs received."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    received: list[Any] = []
    handlers = [(evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))]
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=handlers)
    if not assoc.is_established:
        ae.shutdown()
    return assoc, received


def _the_security_alert(node: Node, caller: str) -> ET.Element:
    """The one Security Alert of the audit log (PS3.15 A.5.3.11): Node Authentication,
    outcome 4 (the refusal worked), naming the refused caller and its address."""
    alerts = [r for r in _audit_log(node) if _event(r)[0] == "110113"]
    assert len(alerts) == 1
    [alert] = alerts
    type_code = alert.find("EventIdentification/EventTypeCode")
    assert type_code is not None and type_code.get("csd-code") == "110126"
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    performer = alert.findall("ActiveParticipant")[1]
    assert performer.get("UserID") == caller
    assert performer.get("NetworkAccessPointID") == "127.0.0.1"
    return alert


def test_an_unknown_calling_ae_is_rejected_and_audited(
    strict_node: tuple[Node, socket.socket],
) -> None:
    """Acceptance 5: A-ASSOCIATE-RJ 1/1/3 and a Security Alert that validates, locally
    and at the syslog collector."""
    node, collector = strict_node
    assoc, received = _associate("STRANGER", "AI_NODE", node.scp.port)
    assert assoc.is_rejected
    # PS3.8 9.3.4: rejected-permanent, service-user, calling-AE-title-not-recognized
    assert (received[0].result, received[0].source, received[0].reason_diagnostic) == (1, 1, 3)

    _the_security_alert(node, "STRANGER")
    assert _event(_audit_log(node)[0])[0] == "110100"  # Application Start first

    frames = []
    while not any(b'csd-code="110113"' in f for f in frames):  # bounded by the timeout
        frames.append(collector.recv(65535))
    alert_frame = next(f for f in frames if b'csd-code="110113"' in f)
    assert alert_frame.startswith(b"<84>1 ")  # security/authorization, warning
    assert validate(alert_frame.partition(BOM)[2]) == []


def test_a_request_for_another_called_ae_is_rejected_and_audited(
    strict_node: tuple[Node, socket.socket],
) -> None:
    """A known caller that calls another AE title gets A-ASSOCIATE-RJ 1/1/7 (PS3.8 9.3.4)
    and a Security Alert naming it; calling the node's own title still works."""
    node, _collector = strict_node
    assoc, received = _associate("PACS", "NOT_THE_NODE", node.scp.port)
    assert assoc.is_rejected
    assert (received[0].result, received[0].source, received[0].reason_diagnostic) == (1, 1, 7)

    text = ET.tostring(_the_security_alert(node, "PACS"), encoding="unicode")
    assert "NOT_THE_NODE" in text and "reason 7" in text, text

    assoc, _ = _associate("PACS", "AI_NODE", node.scp.port)
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert len([r for r in _audit_log(node) if _event(r)[0] == "110113"]) == 1


def test_a_received_study_and_its_delivered_results_are_audited(tmp_path: Path) -> None:
    port, pacs_port = free_port(), free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", pacs_port)], 0.5
    )
    pacs = start_storescp(pacs_port, tmp_path / "pacs")
    node: Node | None = None
    try:
        node = Node(load_settings(config))
        node.start()
        _, datasets = make_ct_series(24, 64, 64, spacing_mm=(5.0, 5.0, 5.0), seed=41)
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="PACS"))
        study_uid = str(datasets[0].StudyInstanceUID)

        def transfers(action: str) -> list[ET.Element]:
            assert node is not None
            return [r for r in _audit_log(node) if _event(r) == ("110104", action)]

        wait_until(lambda: bool(transfers("C")), 60, "instances received audited")
        wait_until(lambda: bool(transfers("R")), 120, "results delivered audited")
        [received] = transfers("C")
        study, patient = received.findall("ParticipantObjectIdentification")
        assert study.get("ParticipantObjectID") == study_uid
        [sop_class] = study.findall(".//SOPClass")
        assert sop_class.get("NumberOfInstances") == "24"
        assert patient.get("ParticipantObjectID") == CANARY_PATIENT_ID  # not in any log
        source = received.findall("ActiveParticipant")[0]
        assert source.get("UserID") == "PACS" and source.get("NetworkAccessPointID") == "127.0.0.1"
        sent = transfers("R")
        assert {
            r.findall("ParticipantObjectIdentification")[0].get("ParticipantObjectID") for r in sent
        } == {study_uid}
        destination = sent[0].findall("ActiveParticipant")[1]
        assert destination.get("UserID") == "PACS"
    finally:
        if node is not None:
            node.stop()
        stop_process(pacs)
    events = [_event(r)[0] for r in _audit_log(node)]
    assert events[0] == "110100" and events[-1] == "110100"  # start ... stop
    audit_text = audit_paths(node.settings)[0].read_text()
    assert CANARY_PATIENT_ID in audit_text  # required by A.5.3.7
    assert phi_canaries_in(audit_text) == [CANARY_PATIENT_ID]  # never the name or birth date
