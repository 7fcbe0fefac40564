"""Conformance statement: section 4, Networking (PS3.2 A.4), written from the facts."""

from __future__ import annotations

from collections.abc import Iterable

from .facts import Context, Facts, Setting, uid_name
from .markdown import Doc, table, uid
from .meanings import ABORT_REASON, ABORT_SOURCE, RJ_REASON, RJ_RESULT, RJ_SOURCE, STATUS_MEANINGS

__all__ = ["networking"]


def _settings(facts: Facts, keys: Iterable[str]) -> str:
    found = {s.key: s for group in facts.settings.values() for s in group}
    rows: list[Setting] = [found[k] for k in keys]
    return table(
        ("Setting", "Default", "Meaning"), ((f"`{s.key}`", s.default, s.help) for s in rows)
    )


def _syntax_rows(syntaxes: Iterable[str]) -> list[tuple[str, str]]:
    return [(uid_name(ts), uid(ts)) for ts in syntaxes]


def _storage_groups(facts: Facts) -> dict[tuple[str, ...], list[Context]]:
    """Accepted storage contexts grouped by their transfer syntaxes (one group today)."""
    groups: dict[tuple[str, ...], list[Context]] = {}
    for cx in facts.accepted:
        if cx.abstract_syntax != "1.2.840.10008.1.1":
            groups.setdefault(cx.transfer_syntaxes, []).append(cx)
    return groups


def _sop_classes(doc: Doc, facts: Facts) -> None:
    sent = {u for k in facts.result_kinds for u in k.sop_class_uids}
    verification = "1.2.840.10008.1.1"
    rows = [("Verification", uid(verification), "Yes", "Yes")]
    rows += [
        (cx.name, uid(cx.abstract_syntax), "Yes" if cx.abstract_syntax in sent else "No", "Yes")
        for cx in sorted(facts.accepted, key=lambda c: c.name)
        if cx.abstract_syntax != verification
    ]
    odd = [
        cx
        for cx in facts.accepted
        if cx.abstract_syntax != verification
        and ("Storage" not in cx.name or "Commitment" in cx.name)
    ]
    doc.add(
        "The node is one application entity. As an SCP it accepts the Verification SOP Class "
        f"and {len(rows) - 1} SOP Classes of its table of storage classes (every SOP Class "
        'whose name pydicom or pynetdicom lists with "Storage", except Storage Commitment), so '
        "a PACS can forward a whole study, whatever it holds. As an SCU it sends only the "
        "SOP Classes of the result objects it creates (Annex A.1) and verifies its "
        "destinations.",
        table(("SOP Class Name", "SOP Class UID", "SCU", "SCP"), rows, "Table 4.2-1. SOP Classes"),
    )
    if odd:
        names = ", ".join(f"{cx.name} ({uid(cx.abstract_syntax)})" for cx in odd)
        doc.add(
            f"Note: the table of storage classes also matches {names}. A presentation context "
            "for these is accepted, but the node implements no service of them beyond "
            "C-STORE: an N-ACTION or N-EVENT-REPORT is answered 0211H (Unrecognized "
            "Operation), so a Storage Commitment request always fails. Do not configure the "
            "node as a Storage Commitment SCP."
        )


def _policies(doc: Doc, facts: Facts) -> None:
    doc.heading(4, "Association Policies")
    doc.heading(5, "General")
    doc.add(
        "The DICOM standard application context name, `1.2.840.10008.3.1.1.1`, is always "
        "proposed and accepted. The maximum PDU length the node receives is "
        "`dicom.max_pdu` when it accepts an association and "
        f"{facts.scu_max_pdu} bytes when it initiates one (its peers' responses are "
        "small); the PDUs it sends are sized by the peer's announced maximum.",
        _settings(facts, ["dicom.ae_title", "dicom.require_called_ae_title", "dicom.max_pdu"]),
    )
    doc.heading(5, "Number of Associations")
    doc.add(
        "Accepted associations are bounded overall and per calling host; connections that "
        "have not yet sent their A-ASSOCIATE-RQ wait in a gate of their own, so silent "
        "connections never take an association's place. For sending, the node opens at "
        "most one association per destination at a time (one sender per destination); "
        "destinations are served in parallel, so a hanging destination delays no other. "
        f"An association proposes at most {facts.max_contexts} presentation contexts; "
        "more are sent over consecutive associations.",
        _settings(
            facts,
            [
                "dicom.max_associations",
                "dicom.max_associations_per_address",
                "dicom.max_pending_connections",
            ],
        ),
    )
    doc.heading(5, "Asynchronous Nature")
    doc.add(
        "Asynchronous operations are not supported: one operation is outstanding at a "
        "time (maximum operations invoked and performed: 1)."
    )
    doc.heading(5, "Implementation Identifying Information")
    doc.add(
        table(
            ("Item", "Value"),
            [
                ("Implementation Class UID", uid(facts.implementation_class_uid)),
                ("Implementation Version Name", f"`{facts.implementation_version_name}`"),
                ("Node software version", f"dicom-ai-node {facts.version}"),
            ],
            "Table 4.2-2. Implementation identifying information",
        ),
        "The Implementation Class UID and Version Name are those of the DICOM network "
        "library the node is built on (pynetdicom); they are also written in the File "
        "Meta Information of each stored instance.",
    )
    doc.heading(5, "Timeouts and Limits")
    doc.add(
        "Each time-out below ends the association (A-ABORT) when it expires. A data set "
        "larger than `dicom.max_instance_mb` aborts the association before it is held in "
        f"memory. An A-ASSOCIATE-RQ may be at most {facts.max_request_bytes} bytes and "
        f"propose at most {facts.max_transfer_syntaxes} transfer syntaxes per presentation "
        "context; presentation context IDs must be odd and unique (PS3.8 9.3.2.2).",
        _settings(
            facts,
            [
                "dicom.association_request_timeout_s",
                "dicom.acse_timeout_s",
                "dicom.dimse_timeout_s",
                "dicom.network_timeout_s",
                "dicom.max_instance_mb",
                "send.timeout_s",
            ],
        ),
    )
    doc.heading(5, "Rejection Reasons")
    rows = [
        (
            r.why,
            r.pdu,
            RJ_RESULT.get(r.result, "-") if r.pdu == "A-ASSOCIATE-RJ" else "-",
            (RJ_SOURCE if r.pdu == "A-ASSOCIATE-RJ" else ABORT_SOURCE).get(r.source, str(r.source)),
            RJ_REASON.get((r.source, r.reason))
            if r.pdu == "A-ASSOCIATE-RJ"
            else ABORT_REASON.get(r.reason, str(r.reason)),
        )
        for r in facts.rejections
    ]
    doc.add(
        "The node decides before pynetdicom makes an association, from the request bytes:",
        table(
            ("Condition", "PDU", "Result", "Source", "Reason/Diagnostic"),
            rows,
            "Table 4.2-3. Association rejection reasons",
        ),
        "A presentation context whose abstract syntax is not in Table 4.2-1, or none of "
        "whose transfer syntaxes is accepted, is rejected individually (abstract syntax "
        "not supported, transfer syntaxes not supported); the association goes on with "
        "the others.",
    )
    doc.heading(5, "User Identity Negotiation")
    modes = ", ".join(f"`{m}`" for m in facts.user_identity_modes)
    doc.add(
        f"`dicom.user_identity` ({modes}) controls User Identity Negotiation (PS3.7 "
        "D.3.3.7) against the `[[users]]` table, whose passcodes are kept as scrypt hashes. "
        "Identity types 1 (username) and 2 (username and passcode) are accepted; Kerberos, "
        "SAML and JWT (types 3 to 5) are refused. With `optional`, an identity that is sent "
        "must be valid; with `required`, a request without one is rejected. The node sends "
        "no User Identity when it initiates an association.",
        _settings(facts, ["dicom.user_identity", "dicom.accept_only_known_callers"]),
    )


def _initiation(doc: Doc, facts: Facts) -> None:
    doc.heading(4, "Association Initiation Policy")
    doc.heading(5, "Activity: Send Results")
    doc.add(
        "When a job completes, each result object gets one delivery per destination: "
        "the AE that sent the study when it is in the AE table (`send.default_to_sender`), "
        "and every configured extra destination, each with the result kinds it asks for. "
        "The node opens an association with a destination's Storage SCP, sends the due "
        "objects with C-STORE and releases it. A failed attempt is retried with capped "
        "exponential back-off until the retry window ends; the objects' UIDs are "
        "deterministic, so a repeated send is the same instance, never a copy.",
        _settings(
            facts,
            [
                "send.calling_ae_title",
                "send.retry_initial_s",
                "send.retry_max_s",
                "send.retry_window_s",
                "send.default_to_sender",
            ],
        ),
        "Proposed presentation contexts: one context per SOP Class being sent, proposing "
        "the object's own transfer syntax first and then the other native little endian "
        "syntaxes, so the objects are sent as encoded when the peer accepts that. Only the "
        "SOP Classes of the objects in the association are proposed.",
    )
    rows = [
        (cx.name, uid(cx.abstract_syntax), uid_name(ts), uid(ts), "SCU", "None")
        for cx in facts.proposed
        for ts in cx.transfer_syntaxes
    ]
    doc.add(
        table(
            ("Abstract Syntax", "UID", "Transfer Syntax", "UID", "Role", "Ext. Neg."),
            rows,
            "Table 4.2-4. Proposed presentation contexts, activity Send Results",
        ),
        "SOP specific conformance (Storage SOP Classes, SCU): Success (0000H) and every "
        "Warning status (0001H, 0107H, 0116H, Bxxx) count as delivered. A Failure or "
        "Refused status, a rejected context or a lost association leaves the object due "
        "for retry; the last reason is shown to the operator and recorded in the study's "
        "history. No extended negotiation is proposed.",
    )
    doc.heading(5, "Activity: Verify a Destination")
    doc.add(
        "An operator may test a destination from the web screens or the API: the node "
        "proposes the Verification SOP Class, sends one C-ECHO and releases the "
        "association.",
        table(
            ("Abstract Syntax", "UID", "Transfer Syntax", "UID", "Role", "Ext. Neg."),
            [
                (
                    "Verification",
                    uid(facts.verification_proposed.abstract_syntax),
                    name,
                    u,
                    "SCU",
                    "None",
                )
                for name, u in _syntax_rows(facts.verification_proposed.transfer_syntaxes)
            ],
            "Table 4.2-5. Proposed presentation contexts, activity Verify a Destination",
        ),
    )


def _acceptance(doc: Doc, facts: Facts) -> None:
    doc.heading(4, "Association Acceptance Policy")
    doc.heading(5, "Activity: Receive Instances")
    groups = _storage_groups(facts)
    doc.add(
        "The node accepts associations that call its AE title and pass the checks of "
        "Table 4.2-3. Each presentation context of Table 4.2-1 is accepted with the first "
        "transfer syntax proposed that appears in its list below (the sender's order is "
        "kept), SCP role only; SCP/SCU role selection and extended negotiation are not "
        "supported and are answered with the default role."
    )
    for number, (syntaxes, contexts) in enumerate(groups.items(), start=6):
        doc.add(
            table(
                ("Transfer Syntax", "UID"),
                _syntax_rows(syntaxes),
                f"Table 4.2-{number}. Transfer syntaxes accepted for {len(contexts)} Storage "
                "SOP Classes of Table 4.2-1",
            )
        )
    verification = next(cx for cx in facts.accepted if cx.abstract_syntax == "1.2.840.10008.1.1")
    doc.add(
        table(
            ("Transfer Syntax", "UID"),
            _syntax_rows(verification.transfer_syntaxes),
            "Transfer syntaxes accepted for the Verification SOP Class",
        ),
        "SOP specific conformance (Storage SOP Classes, SCP): the node is a Level 2 (Full) "
        "storage SCP: it keeps each data set byte for byte as received, all private and "
        "retired attributes included, in the transfer syntax it arrived in, with no "
        "coercion of any attribute. It answers Success only after the file has been "
        "written, fsynced and renamed and the instance indexed in one committed "
        "transaction; a failure before that leaves neither file nor row. Statuses "
        "returned:",
    )
    rows = []
    for name, code in facts.statuses:
        if name not in STATUS_MEANINGS:
            raise KeyError(
                f"receive.status.{name} has no meaning in scripts/conformance/networking.py"
            )
        kind, meaning = STATUS_MEANINGS[name]
        rows.append((kind, f"{code:04X}H", name, meaning))
    doc.add(table(("Service Status", "Code", "Name", "Meaning"), rows, "C-STORE statuses"))
    doc.heading(5, "Activity: Answer a Verification")
    doc.add(
        "Any association the node accepts may carry C-ECHO requests; each is answered "
        "Success (0000H)."
    )


def networking(doc: Doc, facts: Facts) -> None:
    """Section 4: implementation model, AE specification, interfaces, configuration."""
    doc.heading(1, "Networking")
    doc.heading(2, "Implementation Model")
    doc.heading(3, "Application Data Flow")
    doc.add(
        "```text\n"
        "  Modality / PACS ---- C-STORE, C-ECHO ---->  +-------------------+\n"
        "  STOW-RS client ----- POST /dicom-web ---->  |   dicom-ai-node   |\n"
        "                                              |  store -> assemble|\n"
        "                                              |  -> route -> infer|\n"
        "  PACS / archive <---- C-STORE, C-ECHO -----  |  -> encode -> send|\n"
        "  DICOMweb origin <--- STOW-RS POST --------  +-------------------+\n"
        "```",
        "Instances received are stored durably and indexed. When a series, and then its "
        "study, has been quiet for the configured period, the node's routing rules choose "
        "which models run on which series. Each model's results are encoded as new DICOM "
        "objects in new series of the source study and delivered to the destinations "
        "configured for them.",
    )
    ae_title = next(s.default for s in facts.settings["dicom"] if s.key == "dicom.ae_title")
    doc.heading(3, "Functional Definition of Application Entities")
    doc.add(
        f"One application entity, by default {ae_title}, is both the Storage and "
        "Verification SCP that receives studies and the Storage and Verification SCU that "
        "returns results. It listens on `dicom.port` (and on `tls.port` when DICOM TLS is "
        "enabled) and sends with the calling AE title `send.calling_ae_title`, by default "
        "its own AE title."
    )
    doc.heading(3, "Sequencing of Real World Activities")
    doc.add(
        "1. A sender stores the instances of a study (C-STORE). Each is acknowledged only "
        "once it is durable.\n"
        "2. A series is complete after `assemble.quiet_period_s` without a new instance, or "
        "when its announced instance count is reached; a study when none of its series is "
        "still arriving for `assemble.study_quiet_period_s`.\n"
        "3. Routing picks one series per model; the model runs; its results are encoded.\n"
        "4. The results are sent to each destination (Send Results). Instances that arrive "
        "after results were made may cause a revision: new objects that say which earlier "
        "ones they replace (Annex A.1)."
    )
    doc.heading(2, "AE Specifications")
    doc.heading(3, "DICOM AI Node Application Entity")
    doc.heading(4, "SOP Classes")
    _sop_classes(doc, facts)
    _policies(doc, facts)
    _initiation(doc, facts)
    _acceptance(doc, facts)
    doc.heading(2, "Network Interfaces")
    doc.add(
        "The node runs on any network interface the host provides; it uses TCP/IP over "
        "IPv4 or IPv6 (PS3.8 9), with TCP_NODELAY on every association. DICOM over TLS is "
        "described in section 7.1. The HTTP service (operator screens, REST API, metrics "
        "and DICOMweb) is a separate listener, bound by default to the loopback address.",
        _settings(
            facts, ["dicom.host", "dicom.port", "tls.enabled", "tls.port", "web.host", "web.port"]
        ),
    )
    doc.heading(2, "Configuration")
    doc.add(
        "All settings live in one TOML file (`dicom-ai-node init` writes one with every "
        "key, its default and its help) and may be overridden by environment variables "
        "`DICOM_AI_NODE_<SECTION>_<KEY>`. Remote AEs are listed in `[[ae_table]]` (AE "
        "title, host, port, TLS, result kinds wanted); further destinations in "
        "`send.destinations`. The listener's settings:",
        table(
            ("Setting", "Default", "Meaning"),
            ((f"`{s.key}`", s.default, s.help) for s in facts.settings["dicom"]),
            "Table 4.4-1. Listener configuration",
        ),
    )
