"""Audit: DICOM audit messages (PS3.15 A.5), built as XML valid by construction.

One function per event the node reports; each returns an :class:`AuditMessage` whose XML
follows the DICOM Audit Message Schema (A.5.1, vendored in ``schema/``) and the message
definitions of A.5.3:

* :func:`application_activity` -- Application Activity (A.5.3.1): start and stop;
* :func:`instances_transferred` -- DICOM Instances Transferred (A.5.3.7): a study
  received (action C) or sent (action R);
* :func:`security_alert` -- Security Alert (A.5.3.11): e.g. an association refused
  because the calling node is not known, or a failed TLS node authentication;
* :func:`user_authentication` -- User Authentication (A.5.3.12): login and logout.

Text from peers (AE titles, usernames, reasons) is cleaned of characters XML 1.0 cannot
hold, of C1 controls and of line breaks in any reading (CR, LF, NEL, U+2028, U+2029),
so that every message is one line of well-formed XML whatever a peer sent (CWE-117):
an audit record is never lost, nor split, for its peer's text.

Patient data: DICOM Instances Transferred requires a Patient participant whose
ParticipantObjectID is the Patient ID (A.5.3.7, "M"), so audit records carry it; the
patient's name (optional there) is never written. Audit records are a protected
security record kept apart from the application logs, which never hold either.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from .codes import (
    APPLICATION,
    APPLICATION_ACTIVITY,
    APPLICATION_LAUNCHER,
    APPLICATION_START,
    APPLICATION_STOP,
    DESTINATION,
    INSTANCES_TRANSFERRED,
    LOGIN,
    LOGOUT,
    NODE_ID,
    PATIENT_NUMBER,
    SECURITY_ALERT,
    SOURCE,
    STUDY_INSTANCE_UID,
    USER_AUTHENTICATION,
    ActionCode,
    Code,
    Outcome,
)

__all__ = [
    "AuditMessage",
    "AuditSource",
    "Participant",
    "StudyRecord",
    "application_activity",
    "instances_transferred",
    "patient_object_id",
    "security_alert",
    "user_authentication",
]

#: Syslog severities (RFC 5424 6.2.1): PS3.15 A.6 asks for 5 for most audit messages.
NOTICE, WARNING = 5, 4
#: AuditSourceTypeCode 4: application server process (PS3.15 A.5.1.2.1).
APPLICATION_SERVER = "4"

# characters XML 1.0 cannot hold (2.2 Char: C0 controls, lone surrogates), DEL and the
# C1 controls it discourages, the line and paragraph separators (one line each) and the
# bidirectional controls that reorder what a reader sees (CVE-2021-42574)
_NOT_XML = re.compile(
    "[^\u0020-\u007e\u00a0-\u2027\u202f-\u2065\u206a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
# of those, what some reader takes for a line break or a tab: written as a space
_BREAKS = frozenset("\t\n\x0b\x0c\r\x1c\x1d\x1e\x85\u2028\u2029")


def _text(value: str) -> str:
    """``value`` with line breaks and tabs as spaces, other characters XML 1.0 cannot
    hold, DEL and C1 controls as U+FFFD (PS3.15 A.5: UTF-8 XML; CWE-117)."""
    return _NOT_XML.sub(lambda m: " " if m.group() in _BREAKS else "\ufffd", value)


@dataclass(frozen=True)
class Participant:
    """An active participant: a process, node or person (PS3.15 A.5.2.1-A.5.2.4).

    Parameters
    ----------
    user_id:
        The identifier also used in the node's own logs (A.5.2.1): an AE title for a
        DICOM application, a login name for a person.
    is_requestor:
        Whether this participant started the activity.
    alternative_user_id:
        For a DICOM application the AE titles, as ``AETITLES=AE1;AE2`` (A.5.2.2).
    user_name:
        A readable name: the process name for a process (A.5.2.3).
    network_access_point:
        Host name or IP address; the type code (1 or 2) follows from the value.
    """

    user_id: str
    is_requestor: bool
    alternative_user_id: str = ""
    user_name: str = ""
    network_access_point: str = ""

    @classmethod
    def application_entity(
        cls, ae_title: str, *, is_requestor: bool, host: str = "", user_name: str = ""
    ) -> Participant:
        """A DICOM application entity: its AE title as UserID and AlternativeUserID."""
        title = ae_title.strip()
        return cls(title, is_requestor, f"AETITLES={title}", user_name, host)


@dataclass(frozen=True)
class AuditSource:
    """AuditSourceIdentification: who reports (PS3.15 A.5.1, A.5.2)."""

    source_id: str
    enterprise_site_id: str = ""


@dataclass(frozen=True)
class StudyRecord:
    """A study as a participant object, with its SOP classes and instance counts.

    Parameters
    ----------
    study_instance_uid:
        The Study Instance UID (ParticipantObjectID, type 110180).
    sop_classes:
        ``(SOP Class UID, number of instances)`` pairs (PS3.15 A.5.2, SOPClass).
    """

    study_instance_uid: str
    sop_classes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class AuditMessage:
    """One audit message: its event, outcome, syslog severity and XML (one line, UTF-8)."""

    event: Code
    outcome: Outcome
    severity: int
    xml: bytes


def patient_object_id(patient_id: str, issuer_of_patient_id: str = "") -> str:
    """The patient's ParticipantObjectID: the Patient ID, with its issuer as HL7 v2 CX."""
    return f"{patient_id}^^^{issuer_of_patient_id}" if issuer_of_patient_id else patient_id


def _code(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(
        parent,
        tag,
        {"csd-code": code.value, "codeSystemName": code.scheme, "originalText": code.meaning},
    )


def _participant(root: ET.Element, who: Participant, role: Code | None) -> None:
    element = ET.SubElement(root, "ActiveParticipant")
    if role is not None:
        _code(element, "RoleIDCode", role)
    element.set("UserID", _text(who.user_id))
    if who.alternative_user_id:
        element.set("AlternativeUserID", _text(who.alternative_user_id))
    if who.user_name:
        element.set("UserName", _text(who.user_name))
    element.set("UserIsRequestor", "true" if who.is_requestor else "false")
    if who.network_access_point:
        point = _text(who.network_access_point)
        element.set("NetworkAccessPointID", point)
        element.set("NetworkAccessPointTypeCode", "2" if _is_ip(point) else "1")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Object:
    """A ParticipantObjectIdentification (PS3.15 A.5.1)."""

    object_id: str
    id_type: Code
    type_code: str
    name: str
    role: str = ""
    details: tuple[tuple[str, str], ...] = ()
    sop_classes: tuple[tuple[str, int], ...] | None = None


def _object(root: ET.Element, obj: _Object) -> None:
    element = ET.SubElement(root, "ParticipantObjectIdentification")
    _code(element, "ParticipantObjectIDTypeCode", obj.id_type)
    # this edition of the schema requires a name or a query in every participant object
    ET.SubElement(element, "ParticipantObjectName").text = _text(obj.name)
    for kind, value in obj.details:
        encoded = base64.b64encode(_text(value).encode("utf-8")).decode("ascii")
        ET.SubElement(element, "ParticipantObjectDetail", {"type": kind, "value": encoded})
    if obj.sop_classes is not None:
        description = ET.SubElement(element, "ParticipantObjectDescription")
        for uid, count in obj.sop_classes:
            ET.SubElement(
                description, "SOPClass", {"UID": _text(uid), "NumberOfInstances": str(count)}
            )
    element.set("ParticipantObjectID", _text(obj.object_id))
    element.set("ParticipantObjectTypeCode", obj.type_code)
    if obj.role:
        element.set("ParticipantObjectTypeCodeRole", obj.role)


def _message(
    *,
    event: Code,
    action: ActionCode,
    at: dt.datetime,
    outcome: Outcome,
    event_types: Sequence[Code],
    description: str,
    participants: Sequence[tuple[Participant, Code | None]],
    source: AuditSource,
    objects: Sequence[_Object] = (),
    severity: int = NOTICE,
) -> AuditMessage:
    """Assemble the elements in the order of the schema (A.5.1: AuditMessage)."""
    if at.tzinfo is None:
        raise ValueError("EventDateTime needs a time zone (PS3.15 A.5.2.5)")
    if not participants:
        raise ValueError("an audit message has at least one active participant")
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification")
    _code(ident, "EventID", event)
    for event_type in event_types:
        _code(ident, "EventTypeCode", event_type)
    if description:
        ET.SubElement(ident, "EventOutcomeDescription").text = _text(description)
    ident.set("EventActionCode", action.value)
    ident.set("EventDateTime", at.isoformat(timespec="milliseconds"))
    ident.set("EventOutcomeIndicator", outcome.value)
    for who, role in participants:
        _participant(root, who, role)
    audit_source = ET.SubElement(root, "AuditSourceIdentification")
    if source.enterprise_site_id:
        audit_source.set("AuditEnterpriseSiteID", _text(source.enterprise_site_id))
    audit_source.set("AuditSourceID", _text(source.source_id))
    ET.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": APPLICATION_SERVER})
    for obj in objects:
        _object(root, obj)
    xml = ET.tostring(root, encoding="unicode").encode("utf-8")
    return AuditMessage(event, outcome, severity, xml)


def application_activity(
    *,
    started: bool,
    application: Participant,
    source: AuditSource,
    at: dt.datetime,
    launcher: Participant | None = None,
    outcome: Outcome = Outcome.SUCCESS,
) -> AuditMessage:
    """Application Activity: the node started or stopped (PS3.15 A.5.3.1).

    Parameters
    ----------
    started:
        Application Start (110120) when true, Application Stop (110121) otherwise.
    application:
        The process started or stopped (RoleIDCode 110150 Application).
    launcher:
        The person or process that started or stopped it (110151 Application Launcher).
    """
    participants: list[tuple[Participant, Code | None]] = [(application, APPLICATION)]
    if launcher is not None:
        participants.append((launcher, APPLICATION_LAUNCHER))
    return _message(
        event=APPLICATION_ACTIVITY,
        action=ActionCode.EXECUTE,
        at=at,
        outcome=outcome,
        event_types=[APPLICATION_START if started else APPLICATION_STOP],
        description="",
        participants=participants,
        source=source,
    )


def instances_transferred(
    *,
    action: ActionCode,
    sender: Participant,
    receiver: Participant,
    study: StudyRecord,
    patient_id: str,
    source: AuditSource,
    at: dt.datetime,
    outcome: Outcome = Outcome.SUCCESS,
    description: str = "",
) -> AuditMessage:
    """DICOM Instances Transferred: SOP instances of one study moved (PS3.15 A.5.3.7).

    Parameters
    ----------
    action:
        C when the receiver did not hold copies before (the node as receiver counts
        only new instances), R when the reporter is not the receiver (the node sending
        results), U when the receiver reconciled its copies.
    sender, receiver:
        The processes that sent (110153 Source) and received (110152 Destination).
    study:
        The study, with its SOP classes and instance counts.
    patient_id:
        ParticipantObjectID of the Patient participant (see :func:`patient_object_id`);
        required by A.5.3.7. The patient's name is not written.
    at:
        When the transfer completed.
    """
    if action not in (ActionCode.CREATE, ActionCode.READ, ActionCode.UPDATE):
        raise ValueError(f"EventActionCode of Instances Transferred is C, R or U, not {action}")
    objects = [
        _Object(
            study.study_instance_uid,
            STUDY_INSTANCE_UID,
            type_code="2",  # system object
            name=study.study_instance_uid,
            role="3",  # report
            sop_classes=study.sop_classes,
        ),
        # the name repeats the ID: the patient's name is left out of the audit trail
        _Object(patient_id, PATIENT_NUMBER, type_code="1", name=patient_id, role="1"),
    ]
    return _message(
        event=INSTANCES_TRANSFERRED,
        action=action,
        at=at,
        outcome=outcome,
        event_types=[],
        description=description,
        participants=[(sender, SOURCE), (receiver, DESTINATION)],
        source=source,
        objects=objects,
    )


def security_alert(
    *,
    event_type: Code,
    reporter: Participant,
    subject_node: str,
    subject_name: str,
    description: str,
    source: AuditSource,
    at: dt.datetime,
    performers: Sequence[Participant] = (),
    outcome: Outcome = Outcome.MINOR_FAILURE,
) -> AuditMessage:
    """Security Alert: something a security officer should see (PS3.15 A.5.3.11).

    Parameters
    ----------
    event_type:
        From CID 401, e.g. 110126 Node Authentication for a refused calling node or a
        failed TLS handshake.
    reporter:
        The reporting process (the node).
    subject_node:
        The node the alert is about, as an IP address or ``name@domain``
        (ParticipantObjectID of type 110182 Node ID).
    subject_name:
        A descriptor of that node, e.g. the AE title it claimed.
    description:
        Free text; also the "Alert Description" detail the message requires.
    performers:
        Other processes involved (UserIsRequestor is false for them, A.5.3.11).
    outcome:
        Minor or serious failure: the refusal worked; major failure: it may not have.
    """
    participants: list[tuple[Participant, Code | None]] = [(reporter, None)]
    participants += [(dataclasses.replace(p, is_requestor=False), None) for p in performers]
    subject = _Object(
        subject_node,
        NODE_ID,
        type_code="2",  # system object
        name=subject_name,
        details=(("Alert Description", description),),
    )
    return _message(
        event=SECURITY_ALERT,
        action=ActionCode.EXECUTE,
        at=at,
        outcome=outcome,
        event_types=[event_type],
        description=description,
        participants=participants,
        source=source,
        objects=[subject],
        severity=NOTICE if outcome is Outcome.SUCCESS else WARNING,
    )


def user_authentication(
    *,
    login: bool,
    user: Participant,
    source: AuditSource,
    at: dt.datetime,
    node: Participant | None = None,
    outcome: Outcome = Outcome.SUCCESS,
) -> AuditMessage:
    """User Authentication: a user logged in or out, or tried to (PS3.15 A.5.3.12).

    Parameters
    ----------
    user:
        The person authenticated or claimed; needs a network access point (mandatory).
    node:
        The node that performed the authentication.

    Raises
    ------
    ValueError
        When ``user`` has no network access point.
    """
    if not user.network_access_point:
        raise ValueError("the user's NetworkAccessPointID is mandatory (PS3.15 A.5.3.12)")
    participants: list[tuple[Participant, Code | None]] = [(user, None)]
    if node is not None:
        participants.append((node, None))
    return _message(
        event=USER_AUTHENTICATION,
        action=ActionCode.EXECUTE,
        at=at,
        outcome=outcome,
        event_types=[LOGIN if login else LOGOUT],
        description="",
        participants=participants,
        source=source,
        severity=NOTICE if outcome is Outcome.SUCCESS else WARNING,
    )
