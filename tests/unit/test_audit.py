"""Audit: messages valid against the vendored PS3.15 A.5.1 schema, the local log, the spool,
RFC 5424 headers, the forwarder's spooling, the [audit] settings, and the node's events
read from a real SQLite index (no sockets here: tests/integration/test_audit.py has them)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_ai_node.assemble.sweep import complete_due_series
from dicom_ai_node.audit import codes
from dicom_ai_node.audit.codes import ActionCode, Outcome
from dicom_ai_node.audit.forward import SyslogForwarder
from dicom_ai_node.audit.messages import (
    AuditMessage,
    AuditSource,
    Participant,
    StudyRecord,
    application_activity,
    instances_transferred,
    patient_object_id,
    security_alert,
    user_authentication,
)
from dicom_ai_node.audit.node import NodeAudit, audit_paths
from dicom_ai_node.audit.spool import Spool
from dicom_ai_node.audit.syslog import BOM, MAX_UDP_BYTES, MessageTooLarge, syslog_message
from dicom_ai_node.audit.trail import AuditLog
from dicom_ai_node.audit.validate import RNC_PATH, RNG_PATH, rng_from_rnc, validate
from dicom_ai_node.domain import DeliveryState
from dicom_ai_node.errors import ConfigError
from dicom_ai_node.receive.gate import Limits, caller_known
from dicom_ai_node.settings import KnownAE, NodeSettings, StorageSettings, load_settings
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.index import (
    InstanceRecord,
    SeriesAttrs,
    index_instance,
)
from dicom_ai_node.store.tables import Delivery, Job, Result, Series
from dicom_ai_node.testing.series import CANARY_PATIENT_ID

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SOURCE = AuditSource("AI_NODE", "HOSPITAL")
NODE = Participant.application_entity("AI_NODE", is_requestor=False, host="ai-node.example")
PEER = Participant.application_entity("PACS", is_requestor=True, host="10.0.0.5")


def _build_all() -> dict[str, AuditMessage]:
    study = StudyRecord("1.2.3.4", ((CT, 30), (SEG, 1)))
    return {
        "start": application_activity(
            started=True, application=NODE, source=SOURCE, at=T0, launcher=Participant("op", True)
        ),
        "stop": application_activity(started=False, application=NODE, source=SOURCE, at=T0),
        "received": instances_transferred(
            action=ActionCode.CREATE,
            sender=PEER,
            receiver=NODE,
            study=study,
            patient_id=patient_object_id("P1", "HOSP"),
            source=SOURCE,
            at=T0,
        ),
        "sent": instances_transferred(
            action=ActionCode.READ,
            sender=NODE,
            receiver=PEER,
            study=study,
            patient_id="P1",
            source=SOURCE,
            at=T0,
        ),
        "unknown caller": security_alert(
            event_type=codes.NODE_AUTHENTICATION,
            reporter=NODE,
            performers=[PEER],
            subject_node="10.0.0.5",
            subject_name="PACS",
            description="calling AE title not recognised",
            source=SOURCE,
            at=T0,
        ),
        "bad certificate": security_alert(
            event_type=codes.NODE_AUTHENTICATION,
            reporter=NODE,
            subject_node="10.0.0.9",
            subject_name="10.0.0.9",
            description="TLS handshake failed: certificate verify failed",
            source=SOURCE,
            at=T0,
            outcome=Outcome.SERIOUS_FAILURE,
        ),
        "login": user_authentication(
            login=True,
            user=Participant("alice@hospital", True, network_access_point="10.0.0.7"),
            node=NODE,
            source=SOURCE,
            at=T0,
        ),
        "logout": user_authentication(
            login=False,
            user=Participant("alice@hospital", True, network_access_point="10.0.0.7"),
            source=SOURCE,
            at=T0,
            outcome=Outcome.MINOR_FAILURE,
        ),
    }


MESSAGES = _build_all()


def _root(message: AuditMessage | bytes) -> ET.Element:
    return ET.fromstring(message.xml if isinstance(message, AuditMessage) else message)


def _code(element: ET.Element | None) -> tuple[str | None, ...]:
    assert element is not None
    return (element.get("csd-code"), element.get("codeSystemName"), element.get("originalText"))


# -- messages and the schema ---------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_message_validates_against_the_schema(name: str) -> None:
    message = MESSAGES[name]
    assert validate(message.xml) == [], name
    assert b"\n" not in message.xml  # one line in the local log


def test_application_activity_follows_a_5_3_1() -> None:
    root = _root(MESSAGES["start"])
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") == "E"
    assert _code(ident.find("EventID")) == ("110100", "DCM", "Application Activity")
    assert _code(ident.find("EventTypeCode")) == ("110120", "DCM", "Application Start")
    app, launcher = root.findall("ActiveParticipant")
    assert app.get("UserID") == "AI_NODE" and app.get("AlternativeUserID") == "AETITLES=AI_NODE"
    assert _code(app.find("RoleIDCode"))[0] == "110150"
    assert app.get("UserIsRequestor") == "false" and app.get("NetworkAccessPointTypeCode") == "1"
    assert _code(launcher.find("RoleIDCode"))[0] == "110151"
    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "AI_NODE"
    assert source.get("AuditEnterpriseSiteID") == "HOSPITAL"
    stop = _root(MESSAGES["stop"]).find("EventIdentification/EventTypeCode")
    assert _code(stop)[0] == "110121"


def test_instances_transferred_follows_a_5_3_7() -> None:
    root = _root(MESSAGES["received"])
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") == "C"
    assert ident.get("EventOutcomeIndicator") == "0"
    assert _code(ident.find("EventID"))[0] == "110104"
    sender, receiver = root.findall("ActiveParticipant")
    assert (sender.get("UserID"), _code(sender.find("RoleIDCode"))[0]) == ("PACS", "110153")
    assert sender.get("UserIsRequestor") == "true"
    assert sender.get("NetworkAccessPointID") == "10.0.0.5"
    assert sender.get("NetworkAccessPointTypeCode") == "2"
    assert (receiver.get("UserID"), _code(receiver.find("RoleIDCode"))[0]) == ("AI_NODE", "110152")
    study, patient = root.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == "1.2.3.4"
    assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == (
        "2",
        "3",
    )
    assert _code(study.find("ParticipantObjectIDTypeCode"))[0] == "110180"
    counts = {
        c.get("UID"): c.get("NumberOfInstances")
        for c in study.findall("ParticipantObjectDescription/SOPClass")
    }
    assert counts == {CT: "30", SEG: "1"}
    assert patient.get("ParticipantObjectID") == "P1^^^HOSP"
    assert _code(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    assert (
        patient.get("ParticipantObjectTypeCode"),
        patient.get("ParticipantObjectTypeCodeRole"),
    ) == (
        "1",
        "1",
    )
    assert _root(MESSAGES["sent"]).find("EventIdentification").get("EventActionCode") == "R"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="C, R or U"):
        instances_transferred(
            action=ActionCode.EXECUTE,
            sender=PEER,
            receiver=NODE,
            study=StudyRecord("1.2"),
            patient_id="P",
            source=SOURCE,
            at=T0,
        )


def test_security_alert_follows_a_5_3_11() -> None:
    message = MESSAGES["unknown caller"]
    assert message.severity == 4 and message.outcome is Outcome.MINOR_FAILURE
    root = _root(message)
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventOutcomeIndicator") == "4"
    assert _code(ident.find("EventID"))[0] == "110113"
    assert _code(ident.find("EventTypeCode")) == ("110126", "DCM", "Node Authentication")
    reporter, performer = root.findall("ActiveParticipant")
    assert reporter.get("UserID") == "AI_NODE"
    assert performer.get("UserID") == "PACS" and performer.get("UserIsRequestor") == "false"
    [subject] = root.findall("ParticipantObjectIdentification")
    assert subject.get("ParticipantObjectID") == "10.0.0.5"
    assert _code(subject.find("ParticipantObjectIDTypeCode"))[0] == "110182"
    detail = subject.find("ParticipantObjectDetail")
    assert detail is not None and detail.get("type") == "Alert Description"
    assert base64.b64decode(detail.get("value", "")) == b"calling AE title not recognised"
    assert (
        _root(MESSAGES["bad certificate"])
        .find("EventIdentification")
        .get(  # type: ignore[union-attr]
            "EventOutcomeIndicator"
        )
        == "8"
    )


def test_user_authentication_needs_the_users_address() -> None:
    root = _root(MESSAGES["login"])
    assert _code(root.find("EventIdentification/EventTypeCode"))[0] == "110122"
    assert _code(_root(MESSAGES["logout"]).find("EventIdentification/EventTypeCode"))[0] == "110123"
    with pytest.raises(ValueError, match="NetworkAccessPointID"):
        user_authentication(login=True, user=Participant("bob", True), source=SOURCE, at=T0)


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        application_activity(
            started=True, application=NODE, source=SOURCE, at=T0.replace(tzinfo=None)
        )


def test_peer_text_cannot_break_the_message() -> None:
    """A calling AE title is whatever the peer sent: control characters, markup, newlines."""
    hostile = Participant.application_entity('A\x00<b>&"\n', is_requestor=True, host="x y")
    message = security_alert(
        event_type=codes.NODE_AUTHENTICATION,
        reporter=NODE,
        performers=[hostile],
        subject_node="10.0.0.1",
        subject_name='A\x00<b>&"\n',
        description="line one\r\nline two\x1b[31m",
        source=SOURCE,
        at=T0,
    )
    assert validate(message.xml) == []
    assert b"\n" not in message.xml and b"\x00" not in message.xml
    performer = _root(message).findall("ActiveParticipant")[1]
    assert performer.get("UserID") == 'A\ufffd<b>&"'


@pytest.mark.parametrize(
    "break_it",
    [
        lambda x: x.replace(b' originalText="Application Activity"', b""),  # code meaning
        lambda x: x.replace(b'EventActionCode="E"', b'EventActionCode="X"'),
        lambda x: x.replace(b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="1"'),
        lambda x: x.replace(b'EventDateTime="2026', b'EventDateTime="26'),
        lambda x: re.sub(rb"<AuditSourceIdentification.*?</AuditSourceIdentification>", b"", x),
        lambda x: re.sub(rb"<ActiveParticipant.*?</ActiveParticipant>", b"", x),
        lambda x: x.replace(b'UserIsRequestor="false"', b'UserIsRequestor="no"'),
        lambda x: x.replace(b"<AuditMessage>", b"<AuditMessage><Extra />"),
        lambda x: x[:-5],  # not well-formed
    ],
)
def test_the_schema_catches_broken_messages(break_it: Callable[[bytes], bytes]) -> None:
    broken = break_it(MESSAGES["start"].xml)
    assert broken != MESSAGES["start"].xml
    problems = validate(broken)
    assert problems, broken
    assert all(p.kind and p.path for p in problems)


def test_the_vendored_rng_is_the_standards_rnc() -> None:
    """audit-message.rng is generated from the standard's text (schema/README.md)."""
    assert RNG_PATH.read_text() == rng_from_rnc(RNC_PATH.read_text())
    assert "A.5.1.1" in RNC_PATH.read_text().splitlines()[1] + RNC_PATH.read_text().splitlines()[2]


# -- RFC 5424 --------------------------------------------------------------------------------
HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S{1,255}) "
    rb"(?P<app>\S{1,48}) (?P<proc>\S{1,128}) (?P<msgid>\S{1,32}) - (?P<msg>.*)$",
    re.DOTALL,
)


def test_syslog_header_fields_follow_rfc_5424_and_ps3_15_a_6() -> None:
    at = dt.datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    xml = MESSAGES["start"].xml
    frame = syslog_message(xml, severity=5, at=at, hostname="ai node", procid="4242")
    match = HEADER.match(frame)
    assert match is not None, frame[:120]
    assert match["pri"] == b"85"  # facility 10 (security/authorization) * 8 + notice
    assert match["ts"] == b"2026-03-04T03:06:07.890123Z"
    assert match["host"] == b"ai_node"  # PRINTUSASCII only
    assert match["app"] == b"dicom-ai-node" and match["proc"] == b"4242"
    assert match["msgid"] == b"DICOM+RFC3881"
    assert match["msg"] == BOM + xml
    alert = syslog_message(xml, severity=4, at=at, hostname="", procid="")
    assert alert.startswith(b"<84>1 ") and b" - dicom-ai-node - DICOM+RFC3881 - " in alert
    with pytest.raises(ValueError):
        syslog_message(xml, severity=8, at=at, hostname="h", procid="1")
    with pytest.raises(ValueError):
        syslog_message(xml, severity=5, at=at.replace(tzinfo=None), hostname="h", procid="1")


# -- local log and spool ---------------------------------------------------------------------
def test_the_local_log_appends_one_message_per_line(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    log = AuditLog(path)
    log.append(MESSAGES["start"].xml)
    log.close()
    again = AuditLog(path)  # a restart appends
    again.append(MESSAGES["stop"].xml)
    again.close()
    lines = path.read_bytes().splitlines()
    assert lines == [MESSAGES["start"].xml, MESSAGES["stop"].xml]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(OSError):
        again.append(b"<x/>")
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match="audit log"):
        AuditLog(tmp_path / "blocked" / "audit.log")


def test_the_spool_keeps_order_a_bound_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=25)
    assert spool.put(b"first-----") and spool.put(b"second----")
    assert not spool.put(b"third-----")  # 30 > 25 bytes
    (tmp_path / "spool" / "x.msg.tmp").write_bytes(b"torn")  # a crash mid-write
    again = Spool(tmp_path / "spool", max_bytes=25)
    assert len(again) == 2 and again.size == 20
    assert not (tmp_path / "spool" / "x.msg.tmp").exists()
    paths = again.oldest(10)
    assert [p.read_bytes() for p in paths] == [b"first-----", b"second----"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths)
    again.remove(paths[0])
    assert [p.read_bytes() for p in again.oldest(10)] == [b"second----"]


class _Collector:
    """A transport that fails while ``down`` and otherwise keeps what it is sent."""

    def __init__(self, down: bool) -> None:
        self.down = down
        self.got: list[bytes] = []
        self.closed = 0

    def send(self, message: bytes) -> None:
        if len(message) > MAX_UDP_BYTES:
            raise MessageTooLarge("too large")
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        self.got.append(message)

    def close(self) -> None:
        self.closed += 1


def test_the_forwarder_spools_while_the_collector_is_down(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    collector = _Collector(down=True)
    forwarder = SyslogForwarder(collector, spool, queue_size=2)  # no thread: stop() sends
    for n in range(5):  # 2 queued, 3 beyond the queue go straight to the spool
        forwarder.submit(b"m%d" % n)
    assert len(spool) == 3
    forwarder.stop(timeout_s=1)
    assert len(spool) == 5 and collector.got == [] and collector.closed == 1
    # under overload the overflow reaches the spool before the queue: all kept, order not
    assert [p.read_bytes() for p in spool.oldest(10)] == [b"m2", b"m3", b"m4", b"m0", b"m1"]
    up = _Collector(down=False)
    forwarder = SyslogForwarder(up, spool)
    forwarder.submit(b"x" * (MAX_UDP_BYTES + 1))  # can never be carried: dropped, logged
    forwarder.submit(b"m5")
    forwarder.stop(timeout_s=1)
    assert up.got == [b"m5"] and forwarder.dropped == 1


# -- settings ----------------------------------------------------------------------------------
def test_audit_defaults_local_log_on_syslog_off(tmp_path: Path) -> None:
    settings = NodeSettings(base_dir=str(tmp_path))
    assert settings.audit.local_log and settings.audit.syslog_transport == "off"
    log_file, spool = audit_paths(settings)
    assert log_file == tmp_path / "var" / "audit" / "audit.log"
    assert spool == tmp_path / "var" / "audit" / "spool"
    env = {"DICOM_AI_NODE_AUDIT_SYSLOG_TRANSPORT": "udp", "DICOM_AI_NODE_AUDIT_SYSLOG_HOST": "h"}
    assert load_settings(None, env=env).audit.syslog_transport == "udp"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[audit]\nsyslog_transport = "tcp"\n', "audit.syslog_transport"),
        ('[audit]\nsyslog_transport = "tls"\n', "audit.syslog_host"),
        ("[audit]\nsyslog_port = 70000\n", "audit.syslog_port"),
        ('[audit]\ntls_cert_file = "c.pem"\n', "tls_key_file"),
        ("[audit]\nspool_max_mb = -1\n", "spool_max_mb"),
    ],
)
def test_invalid_audit_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


# -- the gate's report of a refused caller ----------------------------------------------------
def _request(calling: str) -> bytes:
    """Enough of an A-ASSOCIATE-RQ for the gate: the Calling AE Title at bytes 27-42."""
    return b"\x01\x00" + bytes(8) + b"AI_NODE".ljust(16) + calling.encode().ljust(16)


def test_the_gate_reports_each_refused_caller() -> None:
    refused: list[tuple[str, str]] = []
    limits = Limits(
        allowed_callers={"PACS": frozenset({"10.0.0.5"})},
        on_unknown_caller=lambda title, address: refused.append((title, address)),
    )
    assert caller_known(limits, _request("PACS"), "10.0.0.5")
    assert not caller_known(limits, _request("STRANGER"), "10.0.0.5")
    assert not caller_known(limits, _request("PACS"), "10.0.0.6")
    assert refused == [("STRANGER", "10.0.0.5"), ("PACS", "10.0.0.6")]

    def broken(title: str, address: str) -> None:
        raise RuntimeError("audit down")

    assert not caller_known(
        Limits(allowed_callers={}, on_unknown_caller=broken), _request("X"), "h"
    )
    assert caller_known(Limits(), _request("ANYONE"), "h")  # no allow-list: nobody refused


# -- what the node reports, from a real index ------------------------------------------------
def _rec(n: int, series: str, at: dt.datetime, calling: str = "PACS") -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=f"1.2.3.{n}",
        sop_class_uid=CT,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.1",
        series_instance_uid=series,
        path=f"p{n}",
        size=1,
        sha256=f"{n:064d}",
        received_at=at,
        calling_ae_title=calling,
        series=SeriesAttrs(patient_id=CANARY_PATIENT_ID, issuer_of_patient_id="HOSP"),
    )


@pytest.fixture
def node_env(tmp_path: Path) -> Iterator[tuple[NodeSettings, Database]]:
    settings = NodeSettings(
        storage=StorageSettings(root=str(tmp_path / "data" / "storage")),
        ae_table=(KnownAE(ae_title="PACS", host="10.0.0.5", port=104),),
        base_dir=str(tmp_path),
    )
    db = Database(settings.database_url)
    db.migrate()
    yield settings, db
    db.dispose()


def _events(log_file: Path) -> list[tuple[str, ET.Element]]:
    out = []
    for line in log_file.read_bytes().splitlines():
        assert validate(line) == []
        root = ET.fromstring(line)
        out.append((_code(root.find("EventIdentification/EventID"))[0] or "", root))
    return out


def test_the_node_audits_each_received_study_once_its_series_are_complete(
    node_env: tuple[NodeSettings, Database],
) -> None:
    settings, db = node_env
    index_instance(db.session, _rec(0, "1.2.2", T0))  # before the audit log existed
    audit = NodeAudit(settings, db.session, lambda: T0)
    audit.start()
    for n in range(1, 4):
        index_instance(db.session, _rec(n, "1.2.2", T0))
    assert audit.received(force=True) == 0  # the series is still receiving
    complete_due_series(db.session, T0 + dt.timedelta(seconds=60), 10)
    index_instance(db.session, _rec(9, "1.2.9", T0 + dt.timedelta(seconds=61)))  # next series
    assert audit.received(force=True) == 1
    assert audit.received(force=True) == 0  # reported once
    audit.stop()
    restarted = NodeAudit(settings, db.session, lambda: T0)  # the position survives
    restarted.start()
    complete_due_series(db.session, T0 + dt.timedelta(seconds=120), 10)
    assert restarted.received(force=True) == 1  # only the second series
    restarted.stop()
    log_file, _ = audit_paths(settings)
    events = _events(log_file)
    assert [e for e, _ in events] == ["110100", "110104", "110100", "110100", "110104", "110100"]
    first, second = (root for e, root in events if e == "110104")
    sender = first.find("ActiveParticipant")
    assert sender is not None and sender.get("UserID") == "PACS"
    assert sender.get("NetworkAccessPointID") == "10.0.0.5"  # from the AE table
    [count] = first.findall(".//SOPClass")
    assert count.get("NumberOfInstances") == "3"  # not the one before the log existed
    patient = first.findall("ParticipantObjectIdentification")[1]
    # the audit trail carries the Patient ID (A.5.3.7); the log records never do (conftest)
    assert patient.get("ParticipantObjectID") == f"{CANARY_PATIENT_ID}^^^HOSP"
    assert second.find(".//SOPClass").get("NumberOfInstances") == "1"  # type: ignore[union-attr]
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


def test_the_node_audits_results_delivered_per_study_and_destination(
    node_env: tuple[NodeSettings, Database],
) -> None:
    settings, db = node_env
    index_instance(db.session, _rec(1, "1.2.2", T0))
    with db.session.begin() as session:
        series = session.scalars(select(Series)).one()
        job = Job(
            job_key="m/1/s/g0",
            study_fk=series.study_fk,
            series_fk=series.pk,
            model_name="m",
            model_version="1",
            created_at=T0,
            updated_at=T0,
        )
        session.add(job)
        session.flush()
        for n, cls in enumerate((SEG, "1.2.840.10008.5.1.4.1.1.88.34")):
            result = Result(
                job_fk=job.pk,
                kind="SEG",
                sop_instance_uid=f"2.25.{n}",
                sop_class_uid=cls,
                series_instance_uid="2.25.9",
                path=f"r{n}",
                created_at=T0,
            )
            session.add(result)
            session.flush()
            session.add(
                Delivery(
                    result_fk=result.pk,
                    destination="PACS@10.0.0.5:104",
                    state=DeliveryState.DELIVERED.value,
                    next_attempt_at=T0,
                    deadline_at=T0,
                )
            )
    with db.session() as session:
        pks = list(session.scalars(select(Delivery.pk)))
    audit = NodeAudit(settings, db.session, lambda: T0)
    audit.delivered("PACS@10.0.0.5:104", pks)
    audit.delivered("PACS@10.0.0.5:104", [])  # nothing delivered: nothing recorded
    audit.trail.close()
    log_file, _ = audit_paths(settings)
    [(event, root)] = _events(log_file)
    assert event == "110104"
    assert root.find("EventIdentification").get("EventActionCode") == "R"  # type: ignore[union-attr]
    sender, receiver = root.findall("ActiveParticipant")
    assert sender.get("UserID") == "DICOM_AI_NODE" and sender.get("UserIsRequestor") == "true"
    assert receiver.get("UserID") == "PACS" and receiver.get("NetworkAccessPointID") == "10.0.0.5"
    assert len(root.findall(".//SOPClass")) == 2


def test_no_local_log_when_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[audit]\nlocal_log = false\n[storage]\nroot = "s"\n')
    settings = load_settings(path, env={})
    db = Database(settings.database_url)
    db.migrate()
    try:
        audit = NodeAudit(settings, db.session, lambda: T0)
        audit.start()
        audit.stop()
    finally:
        db.dispose()
    log_file, _ = audit_paths(settings)
    assert not log_file.exists()
    assert os.path.exists(log_file.parent / "received.position")


def test_refused_tls_handshakes_and_user_identities_are_audited(
    node_env: tuple[NodeSettings, Database],
) -> None:
    settings, db = node_env
    audit = NodeAudit(settings, db.session, lambda: T0)
    audit.start()
    audit.tls_failure("10.0.0.66", "CERTIFICATE_VERIFY_FAILED")
    audit.user_refused("modality1", "10.0.0.67", "wrong passcode")
    audit.stop()
    events = dict(_events(audit_paths(settings)[0]))
    alert = ET.tostring(events["110113"], encoding="unicode")  # Security Alert
    assert "10.0.0.66" in alert and "CERTIFICATE_VERIFY_FAILED" in alert
    login = events["110114"]  # User Authentication (PS3.15 A.5.3.12)
    assert login.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    assert "modality1" in ET.tostring(login, encoding="unicode")
    assert "wrong passcode" not in ET.tostring(login, encoding="unicode")
