"""Conformance statement: the facts, read from the node's own code and settings.

Everything the statement says about networking, security and the objects the node
creates comes from here: the presentation contexts the listener's application entity
is configured with, the contexts the Storage SCU proposes, the settings' defaults and
help texts, the rejection PDUs the gate sends, the DIMSE statuses, the result kinds,
the audit codes and the DICOMweb constants. A change to any of those changes the
document, and ``tests/unit/test_conformance.py`` fails until it is regenerated.

This lives outside the package because it reads every stage, which only the wiring may
do (``tests/unit/test_boundaries.py``); it imports them but performs no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import _STORAGE_CLASSES

from dicom_ai_node import __version__, dicomweb, identity, tls
from dicom_ai_node.audit import codes as audit_codes
from dicom_ai_node.encode import NUMBERED_REVISIONS
from dicom_ai_node.encode import sr as sr_encoder
from dicom_ai_node.encode.kinds import DEFAULT_RESULTS, RESULT_KINDS, ResultKind
from dicom_ai_node.passwords import USER_IDENTITY_MODES
from dicom_ai_node.receive import gate
from dicom_ai_node.receive import status as dimse_status
from dicom_ai_node.receive.scp import VERIFICATION, ScpConfig, StorageSCP
from dicom_ai_node.send import scu
from dicom_ai_node.send.net import NodeAE
from dicom_ai_node.settings import NodeSettings

__all__ = [
    "CREATED_CHARACTER_SET",
    "CREATED_TRANSFER_SYNTAX",
    "Context",
    "Facts",
    "Rejection",
    "Setting",
    "gather",
    "uid_name",
]

#: The transfer syntax every encoder writes its objects in (highdicom's default);
#: ``tests/unit/test_conformance.py`` checks it on the objects the encoders make.
CREATED_TRANSFER_SYNTAX = str(ExplicitVRLittleEndian)
#: The Specific Character Set of every created object (UTF-8, PS3.5 6.1.2.5.3);
#: checked the same way.
CREATED_CHARACTER_SET = "ISO_IR 192"
#: The PS3.7 D.3.3.7.1 User Identity Types the gate accepts (``receive/users.py``).
ACCEPTED_IDENTITY_TYPES = {1: "Username", 2: "Username and passcode"}


@dataclass(frozen=True)
class Context:
    """One presentation context: an abstract syntax and its transfer syntaxes."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    @property
    def name(self) -> str:
        return uid_name(self.abstract_syntax)


@dataclass(frozen=True)
class Setting:
    """One configuration key with its default and help text."""

    key: str
    default: str
    help: str


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ (or A-ABORT) the gate sends, decoded from its PDU bytes."""

    why: str
    pdu: str
    result: int
    source: int
    reason: int


@dataclass(frozen=True)
class Facts:
    """All the node's tables the statement is written from."""

    version: str
    implementation_class_uid: str
    implementation_version_name: str
    accepted: tuple[Context, ...]
    proposed: tuple[Context, ...]
    verification_proposed: Context
    statuses: tuple[tuple[str, int], ...]
    rejections: tuple[Rejection, ...]
    settings: dict[str, tuple[Setting, ...]]
    result_kinds: tuple[ResultKind, ...]
    default_results: tuple[str, ...]
    max_contexts: int
    scu_max_pdu: int
    scu_ae_title: str
    max_transfer_syntaxes: int
    max_request_bytes: int
    user_identity_modes: tuple[str, ...]
    ciphers: str
    client_certificate_modes: tuple[str, ...]
    audit_codes: tuple[audit_codes.Code, ...]
    procedures: tuple[tuple[str, tuple[str, str, str]], ...]
    manufacturer: str
    uid_root: str
    numbered_revisions: int
    dicomweb: dict[str, str]


def uid_name(uid: str) -> str:
    """The standard name of a UID; pydicom's dictionary, else pynetdicom's keyword."""
    name = UID(uid).name
    if name != uid:
        return name
    for keyword, value in _STORAGE_CLASSES.items():
        if value == uid:
            return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", keyword)
    return uid


def _contexts(found: Sequence[PresentationContext]) -> tuple[Context, ...]:
    return tuple(
        Context(str(cx.abstract_syntax), tuple(str(ts) for ts in cx.transfer_syntax))
        for cx in found
    )


def _scp_contexts() -> tuple[tuple[Context, ...], str, str]:
    """The contexts, implementation UID and version name of the listener's AE.

    The SCP builds its AE (``StorageSCP._make_ae``) from its config alone; an instance
    with only a config is made here so that the statement lists exactly what the
    listener is configured with, with no copy of its table.
    """
    scp = StorageSCP.__new__(StorageSCP)
    scp.config = ScpConfig(ae_title="STATEMENT", host="127.0.0.1", port=0)
    ae = scp._make_ae()
    contexts = _contexts(ae.supported_contexts)
    return contexts, str(ae.implementation_class_uid), str(ae.implementation_version_name)


def _scu_contexts() -> tuple[Context, ...]:
    """The contexts the Storage SCU proposes for each result SOP class as encoded."""
    items = [
        scu._Item(i, Dataset(), UID(sop), "", UID(CREATED_TRANSFER_SYNTAX))
        for i, sop in enumerate(u for k in RESULT_KINDS.values() for u in k.sop_class_uids)
    ]
    return _contexts(scu._contexts_for(items))


def _echo_context() -> Context:
    """What ``send/echo.py`` proposes: Verification in pynetdicom's default syntaxes."""
    ae = NodeAE()
    ae.add_requested_context(VERIFICATION)
    return _contexts(ae.requested_contexts)[0]


def _settings(section: object, prefix: str) -> tuple[Setting, ...]:
    def shown(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return "[" + ", ".join(f'"{v}"' for v in value) + "]"
        return f'"{value}"' if isinstance(value, str) else repr(value)

    return tuple(
        Setting(f"{prefix}.{f.name}", shown(getattr(section, f.name)), f.metadata["help"])
        for f in dataclasses.fields(section)  # type: ignore[arg-type]
    )


def _rejection(why: str, make: Callable[[], bytes]) -> Rejection:
    pdu = make()  # A-ASSOCIATE-RJ / A-ABORT: result (or reserved), source, reason at 7-9
    kind = {0x03: "A-ASSOCIATE-RJ", 0x07: "A-ABORT"}[pdu[0]]
    return Rejection(why, kind, pdu[7], pdu[8], pdu[9])


def _rejections() -> tuple[Rejection, ...]:
    return (
        _rejection(
            "Called AE Title is not the node's", lambda: gate.rejection_pdu(*gate.WRONG_CALLED)
        ),
        _rejection(
            "Calling AE Title not in the AE table, or calling from an address its host does "
            "not resolve to (only with accept_only_known_callers)",
            lambda: gate.rejection_pdu(*gate.UNKNOWN_CALLER),
        ),
        _rejection(
            "User Identity refused, or missing when required",
            lambda: gate.rejection_pdu(*gate.USER_REFUSED),
        ),
        _rejection(
            "Association limit reached (overall or for the calling host)", gate.rejection_pdu
        ),
        _rejection(
            "A-ASSOCIATE-RQ malformed, too large, or with a name that is not an AE title",
            gate.abort_pdu,
        ),
    )


def gather() -> Facts:
    """Read every table the statement is written from."""
    accepted, class_uid, version_name = _scp_contexts()
    defaults = NodeSettings()
    return Facts(
        version=__version__,
        implementation_class_uid=class_uid,
        implementation_version_name=version_name,
        accepted=accepted,
        proposed=_scu_contexts(),
        verification_proposed=_echo_context(),
        statuses=tuple(
            (name, int(getattr(dimse_status, name))) for name in sorted(dimse_status.__all__)
        ),
        rejections=_rejections(),
        settings={
            "dicom": _settings(defaults.dicom, "dicom"),
            "tls": _settings(defaults.tls, "tls"),
            "send": _settings(defaults.send, "send"),
            "audit": _settings(defaults.audit, "audit"),
            "web": _settings(defaults.web, "web"),
        },
        result_kinds=tuple(RESULT_KINDS.values()),
        default_results=DEFAULT_RESULTS,
        max_contexts=scu.MAX_PRESENTATION_CONTEXTS,
        scu_max_pdu=scu.DEFAULT_MAX_PDU,
        scu_ae_title=scu.DEFAULT_CALLING_AE_TITLE,
        max_transfer_syntaxes=gate.MAX_TRANSFER_SYNTAXES,
        max_request_bytes=gate.MAX_REQUEST_BYTES,
        user_identity_modes=USER_IDENTITY_MODES,
        ciphers=tls.BCP195_CIPHERS,
        client_certificate_modes=tuple(tls.CLIENT_CERTIFICATES),
        audit_codes=tuple(v for v in vars(audit_codes).values() if isinstance(v, audit_codes.Code)),
        procedures=tuple(
            (modality, (c.value, c.scheme_designator, c.meaning))
            for modality, c in sr_encoder._PROCEDURES.items()
        ),
        manufacturer=identity.MANUFACTURER,
        uid_root=identity.UID_ROOT,
        numbered_revisions=NUMBERED_REVISIONS,
        dicomweb={name: getattr(dicomweb, name) for name in dicomweb.__all__},
    )
