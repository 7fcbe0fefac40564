"""Audit: IHE ATNA audit messages (DICOM PS3.15 A.5), a local log and syslog.

``messages`` builds the XML, ``validate`` checks it against the vendored schema,
``trail`` writes it durably and hands it to ``forward`` (syslog over TLS or UDP, with a
spool while the collector is down), and ``node`` decides what the node reports.
"""

from .codes import ActionCode, Code, Outcome
from .messages import (
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
from .node import NodeAudit, audit_paths
from .validate import validate

__all__ = [
    "ActionCode",
    "AuditMessage",
    "AuditSource",
    "Code",
    "NodeAudit",
    "Outcome",
    "Participant",
    "StudyRecord",
    "application_activity",
    "audit_paths",
    "instances_transferred",
    "patient_object_id",
    "security_alert",
    "user_authentication",
    "validate",
]
