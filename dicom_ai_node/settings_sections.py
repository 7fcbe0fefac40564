"""Core: the stages' settings: storage, assemble, route, infer, send, audit and privacy.

Part of the tree of :mod:`dicom_ai_node.settings`, which re-exports every class here.
Every field carries help text in its metadata (``_f``); each section checks its own
values when it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .result_kinds import DEFAULT_RESULTS, RESULT_KINDS

__all__ = [
    "DESTINATION_AUTH",
    "DESTINATION_PROTOCOLS",
    "SYSLOG_TRANSPORTS",
    "AssembleSettings",
    "AuditSettings",
    "Destination",
    "InferSettings",
    "PrivacySettings",
    "RouteSettings",
    "SendSettings",
    "StorageSettings",
    "check_results",
]


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class StorageSettings:
    """Where instances, results and the index live."""

    root: str = _f("var/storage", "Folder for received instances and results.")
    database_url: str = _f(
        "", "SQLAlchemy URL of the index; empty means SQLite at <root>/../node.db (WAL mode)."
    )
    fsync: bool = _f(True, "fsync every file and its folder before answering Success.")
    db_lock_timeout_s: float = _f(
        30.0,
        "Longest wait for a database lock; after it (and two retries) an instance is "
        "refused with 0xA700 instead of the association hanging.",
    )
    min_free_mb: int = _f(500, "Refuse new instances (0xA700) when less disk is free.")
    spare_pool_mb: int = _f(
        256,
        "Disk kept in pre-written spare files so that each stored instance fsyncs less (0: none).",
    )
    spare_max_mb: int = _f(8, "Instances larger than this never use a spare file.")

    def __post_init__(self) -> None:
        for name in ("min_free_mb", "spare_pool_mb", "spare_max_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"storage.{name} must not be negative")
        if self.db_lock_timeout_s <= 0:
            raise ConfigError("storage.db_lock_timeout_s must be positive")


@dataclass(frozen=True)
class AssembleSettings:
    """When a series counts as complete."""

    quiet_period_s: float = _f(10.0, "Seconds after the last instance before a series is complete.")
    study_quiet_period_s: float = _f(
        0.0,
        "Seconds without an instance of a study before the rules that choose among its "
        "series decide (one job per study and model); 0 or less than quiet_period_s means "
        "quiet_period_s, so a single-series study waits no longer. Set it longer than the "
        "gaps a PACS leaves between the series it forwards.",
    )
    sweep_interval_s: float = _f(1.0, "How often to look for series whose quiet period is over.")
    late_instance_policy: str = _f(
        "rerun",
        "What late or better data after results do (more instances of the chosen series, or "
        "a series selection now prefers): rerun (a revision supersedes the results, its SR "
        "names its predecessor) or record (only recorded, nothing new is sent).",
    )

    def __post_init__(self) -> None:
        if self.late_instance_policy not in ("rerun", "record"):
            raise ConfigError("assemble.late_instance_policy must be 'rerun' or 'record'")
        if self.study_quiet_period_s < 0:
            raise ConfigError("assemble.study_quiet_period_s must be 0 or more")


@dataclass(frozen=True)
class RouteSettings:
    """Routing rules."""

    rules_file: str = _f("models/rules.yaml", "YAML file with the routing rules.")


#: Audit record forwarding (PS3.15 A.6 SYSLOG-TLS, A.7 SYSLOG-UDP), or none.
SYSLOG_TRANSPORTS = ("off", "udp", "tls")


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail (IHE ATNA, PS3.15 A.5): a local log and an optional syslog collector."""

    local_log: bool = _f(True, "Append every audit message to a local file (fsynced).")
    log_file: str = _f(
        "", "The local audit log; empty means <storage.root>/../audit/audit.log (0600)."
    )
    syslog_transport: str = _f(
        "off", "Forward audit messages to a collector: off, udp (RFC 5426) or tls (RFC 5425)."
    )
    syslog_host: str = _f("", "Host name or address of the syslog collector.")
    syslog_port: int = _f(0, "Port of the collector; 0 uses 514 for udp and 6514 for tls.")
    tls_ca_file: str = _f(
        "", "CA certificates (PEM) the collector's certificate must chain to; empty: system CAs."
    )
    tls_cert_file: str = _f(
        "", "Our client certificate (PEM) for collectors that authenticate nodes; optional."
    )
    tls_key_file: str = _f("", "Private key (PEM) of tls_cert_file.")
    spool_dir: str = _f(
        "",
        "Folder holding messages while the collector is down (sent when it is back); "
        "empty means a spool/ folder beside the local log.",
    )
    spool_max_mb: int = _f(
        256, "Largest spool; beyond it new messages are kept only in the local log."
    )
    source_id: str = _f("", "AuditSourceID of every message; empty uses dicom.ae_title.")
    enterprise_site_id: str = _f("", "AuditEnterpriseSiteID of every message (optional).")

    def __post_init__(self) -> None:
        if self.syslog_transport not in SYSLOG_TRANSPORTS:
            raise ConfigError(
                f"audit.syslog_transport {self.syslog_transport!r} is not one of "
                f"{', '.join(SYSLOG_TRANSPORTS)}"
            )
        if self.syslog_transport != "off" and not self.syslog_host:
            raise ConfigError(f"audit.syslog_host is needed for {self.syslog_transport}")
        if not 0 <= self.syslog_port <= 65535:
            raise ConfigError(f"audit.syslog_port {self.syslog_port} out of range")
        if self.spool_max_mb < 0:
            raise ConfigError("audit.spool_max_mb must not be negative")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("audit.tls_cert_file and audit.tls_key_file go together")


@dataclass(frozen=True)
class InferSettings:
    """Models and the in-process inference worker."""

    models_dir: str = _f("models", "Folder searched for <model>/model.toml manifests.")
    device: str = _f("auto", "auto (CUDA when available), cpu or cuda.")
    threads: int = _f(0, "CPU threads for inference; 0 uses the cores available.")
    bf16: bool = _f(True, "Use bfloat16 autocast on CPUs that support it.")
    workers: int = _f(1, "Inference worker threads in this process.")
    isolate_decoding: bool = _f(
        True,
        "Decode compressed pixel data (JPEG, JPEG-LS, JPEG 2000, RLE) in a separate process, "
        "so that a crashing codec fails the job, not the node.",
    )
    decoder_memory_mb: int = _f(
        4096, "Address-space limit of the decoding process (decompression bombs stop there)."
    )
    decode_timeout_s: float = _f(
        300.0, "Longest time to decode one series' compressed images; the decoder is stopped."
    )
    max_voxels: int = _f(
        1_000_000_000,
        "Largest series decoded for a model (rows x columns x frames x samples, summed), "
        "checked before any pixel is decoded; a larger one fails its job with the reason.",
    )


def check_results(value: Any, where: str) -> tuple[str, ...]:
    """A destination's ``results``: known kinds (any case), in the order the encoders make them.

    Raises
    ------
    ConfigError
        On an unknown kind (naming the allowed ones), an empty list, or KOS without SC
        and SR: the KOS references the key images and the reports (PS3.3 A.35.4), which
        must reach the same destination for its references to resolve there.
    """
    items = [value] if isinstance(value, str) else list(value)
    names = {str(v).strip().upper() for v in items if str(v).strip()}
    unknown = sorted(names - RESULT_KINDS.keys())
    if unknown:
        raise ConfigError(
            f"{where}: unknown result kind(s) {unknown}; choose from {', '.join(RESULT_KINDS)}"
        )
    if not names:
        raise ConfigError(f"{where}: results is empty (to send nothing, leave the entry out)")
    if "KOS" in names and not {"SC", "SR"} <= names:
        raise ConfigError(
            f"{where}: KOS references the key images and the reports: add SC and SR to its "
            "results, or leave KOS out"
        )
    return tuple(k for k in RESULT_KINDS if k in names)


#: How a destination takes results: C-STORE (PS3.4 Annex B) or STOW-RS (PS3.18 10.5).
DESTINATION_PROTOCOLS = ("dimse", "dicomweb")
#: How the node identifies itself to a DICOMweb destination (RFC 6750 bearer, RFC 7617 basic).
DESTINATION_AUTH = ("none", "bearer", "basic")


@dataclass(frozen=True)
class Destination:
    """One destination of ``send.destinations``: where results go, how, and which kinds.

    A plain string entry ``"AE@HOST:PORT"`` is a DIMSE destination with the default
    results (or, when the AE table lists that AE, the table entry's ``results`` and
    ``tls``). The outbox names a destination by its ``address``.
    """

    address: str = _f(
        "", "AE@HOST:PORT for dimse; the base URL (http(s)://host/dicom-web) for dicomweb."
    )
    protocol: str = _f("dimse", "dimse (C-STORE) or dicomweb (STOW-RS, PS3.18 10.5).")
    results: tuple[str, ...] = _f(
        DEFAULT_RESULTS, f"Result kinds it gets, from {', '.join(RESULT_KINDS)}."
    )
    auth: str = _f("none", "dicomweb only: none, bearer (a token) or basic (user:password).")
    credentials_file: str = _f(
        "",
        "dicomweb with auth: a file holding the token, or user:password, on one line "
        "(read when sending, never logged).",
    )
    ca_file: str = _f(
        "", "dicomweb over https: CA certificates (PEM) to trust; empty: the system's."
    )
    tls: bool = _f(False, "dimse only: send over DICOM TLS (the [tls] section's identity).")

    def __post_init__(self) -> None:
        where = f"send.destinations entry {self.address!r}"
        if not self.address.strip():
            raise ConfigError("send.destinations: an entry has no address")
        object.__setattr__(self, "address", self.address.strip())
        object.__setattr__(self, "results", check_results(self.results, where))
        if self.protocol not in DESTINATION_PROTOCOLS:
            raise ConfigError(
                f"{where}: protocol {self.protocol!r} is not one of "
                f"{', '.join(DESTINATION_PROTOCOLS)}"
            )
        if self.auth not in DESTINATION_AUTH:
            raise ConfigError(
                f"{where}: auth {self.auth!r} is not one of {', '.join(DESTINATION_AUTH)}"
            )
        web = self.address.lower().startswith(("http://", "https://"))
        if self.protocol == "dicomweb":
            if not web:
                raise ConfigError(f"{where}: protocol dicomweb needs an http(s):// base URL")
            if self.tls:
                raise ConfigError(f"{where}: tls is for dimse; a dicomweb URL says https")
            if self.ca_file and not self.address.lower().startswith("https://"):
                raise ConfigError(f"{where}: ca_file needs an https:// URL")
        else:
            if web:
                raise ConfigError(f'{where}: a URL needs protocol = "dicomweb"')
            if self.auth != "none" or self.credentials_file or self.ca_file:
                raise ConfigError(f"{where}: auth, credentials_file and ca_file are for dicomweb")
        if self.auth == "none" and self.credentials_file:
            raise ConfigError(f"{where}: credentials_file is given but auth is none")
        if self.auth != "none" and not self.credentials_file:
            raise ConfigError(f"{where}: auth {self.auth} needs credentials_file")

    @classmethod
    def of(cls, entry: str | Mapping[str, Any] | Destination) -> Destination:
        """A destination from a ``send.destinations`` entry: a string or a table."""
        if isinstance(entry, Destination):
            return entry
        if isinstance(entry, str):
            return cls(address=entry)
        return cls(**entry)


@dataclass(frozen=True)
class SendSettings:
    """Delivery of results (the durable outbox)."""

    calling_ae_title: str = _f("", "Calling AE title for sending; empty uses dicom.ae_title.")
    timeout_s: float = _f(
        30.0,
        "Connection, association and DIMSE timeout of one delivery attempt, in seconds: a "
        "destination that hangs longer fails the attempt (only its own sender waits).",
    )
    retry_initial_s: float = _f(5.0, "First retry delay after a failed delivery, in seconds.")
    retry_max_s: float = _f(
        30.0,
        "Longest delay between retries (the exponential backoff doubles up to this cap). A "
        "destination that comes back gets its held results within this + 1 s + one "
        "attempt; the default keeps that under a minute.",
    )
    retry_window_s: float = _f(
        259200.0,
        "Retry a delivery for this many seconds after its result was made (72 h), then "
        "mark it failed with the last error.",
    )
    default_to_sender: bool = _f(True, "Send results back to the AE that sent the study.")
    destinations: tuple[Destination, ...] = _f(
        (),
        "Extra destinations for every result (in addition to the sender): AE@HOST:PORT "
        "strings, or tables { address, protocol, results, auth, credentials_file, ca_file, "
        "tls }.",
    )

    def __post_init__(self) -> None:
        entries = tuple(Destination.of(e) for e in self.destinations)
        object.__setattr__(self, "destinations", entries)
        addresses = [e.address for e in entries]
        repeated = sorted({a for a in addresses if addresses.count(a) > 1})
        if repeated:
            raise ConfigError(f"send.destinations: {repeated} listed more than once")
        if not self.timeout_s > 0:
            raise ConfigError(f"send.timeout_s must be positive, not {self.timeout_s!r}")
        if not self.retry_initial_s > 0:
            raise ConfigError(
                f"send.retry_initial_s must be positive, not {self.retry_initial_s!r}"
            )
        if not self.retry_max_s >= self.retry_initial_s:
            raise ConfigError("send.retry_max_s must be at least send.retry_initial_s")
        if not self.retry_window_s > 0:
            raise ConfigError(f"send.retry_window_s must be positive, not {self.retry_window_s!r}")


@dataclass(frozen=True)
class PrivacySettings:
    """De-identification for models that run elsewhere (PS3.15 Annex E; docs/security.md)."""

    secret_file: str = _f(
        "",
        "File with the node's de-identification secret (keys the replacement UIDs and "
        "pseudonyms; made at first use, mode 0600); empty means "
        "<storage.root>/../privacy/secret. Keep it: a new secret gives new pseudonyms.",
    )
