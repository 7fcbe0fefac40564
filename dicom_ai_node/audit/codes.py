"""Audit: the coded values of DICOM audit messages (PS3.15 A.5.1.2, PS3.16 CID 400-404).

Each code is (Code Value, Coding Scheme Designator, Code Meaning); in the message they
become the ``csd-code``, ``codeSystemName`` and ``originalText`` attributes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "APPLICATION",
    "APPLICATION_ACTIVITY",
    "APPLICATION_LAUNCHER",
    "APPLICATION_START",
    "APPLICATION_STOP",
    "DESTINATION",
    "INSTANCES_TRANSFERRED",
    "LOGIN",
    "LOGOUT",
    "NODE_AUTHENTICATION",
    "NODE_ID",
    "PATIENT_NUMBER",
    "SECURITY_ALERT",
    "SOFTWARE_CONFIGURATION",
    "SOURCE",
    "STUDY_INSTANCE_UID",
    "USER_AUTHENTICATION",
    "USE_OF_RESTRICTED_FUNCTION",
    "ActionCode",
    "Code",
    "Outcome",
]


@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1 ``CodedValueType``)."""

    value: str
    scheme: str
    meaning: str


# Audit Event ID, CID 400 (PS3.16)
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")

# Audit Event Type Code, CID 401
APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
LOGIN = Code("110122", "DCM", "Login")
LOGOUT = Code("110123", "DCM", "Logout")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
SOFTWARE_CONFIGURATION = Code("110131", "DCM", "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")

# Audit Active Participant Role ID Code, CID 402
APPLICATION = Code("110150", "DCM", "Application")
APPLICATION_LAUNCHER = Code("110151", "DCM", "Application Launcher")
DESTINATION = Code("110152", "DCM", "Destination Role ID")
SOURCE = Code("110153", "DCM", "Source Role ID")

# Audit Participant Object ID Type Code, CID 404 and PS3.15 A.5.1.2.4 (RFC 3881)
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
NODE_ID = Code("110182", "DCM", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")


class ActionCode(enum.StrEnum):
    """EventActionCode (PS3.15 A.5.1, A.5.2)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(enum.StrEnum):
    """EventOutcomeIndicator (PS3.15 A.5.2, Table A.5.2-1)."""

    SUCCESS = "0"
    #: Action restarted (e.g. a refused request the peer may retry).
    MINOR_FAILURE = "4"
    #: Action terminated.
    SERIOUS_FAILURE = "8"
    #: Action made unavailable.
    MAJOR_FAILURE = "12"
