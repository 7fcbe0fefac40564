"""Core: the settings, one frozen tree from a TOML file and ``DICOM_AI_NODE_<SECTION>_<KEY>``.

Every field carries help text in its metadata; ``dicom-ai-node init`` writes it out as a
commented configuration file and a test checks that no field lacks it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from .errors import ConfigError
from .passwords import USER_IDENTITY_MODES, check_hash

__all__ = [
    "WEB_ROLES",
    "AssembleSettings",
    "AuditSettings",
    "DicomSettings",
    "InferSettings",
    "KnownAE",
    "KnownUser",
    "NodeSettings",
    "PrivacySettings",
    "RouteSettings",
    "SendSettings",
    "StorageSettings",
    "TlsSettings",
    "WebSettings",
    "load_settings",
    "render_config",
]

ENV_PREFIX = "DICOM_AI_NODE_"
T = TypeVar("T")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _valid_ae(value: str, what: str) -> str:
    text = value.strip()
    if not 1 <= len(text) <= 16 or "\\" in text or any(ord(c) < 32 for c in text):
        raise ConfigError(f"{what}: {value!r} is not a valid AE title (PS3.5 AE: 1-16 characters)")
    return text


@dataclass(frozen=True)
class KnownAE:
    """A peer application entity in the AE table; results go back to it by default."""

    ae_title: str = _f("", "AE title of the peer (PS3.5 AE, at most 16 characters).")
    host: str = _f("", "Host name or IP address of the peer.")
    port: int = _f(104, "TCP port of the peer's Storage SCP.")
    send_results: bool = _f(True, "Send results to this AE when it sent the study.")
    tls: bool = _f(False, "Send to this AE over DICOM TLS (the [tls] section's identity).")

    def __post_init__(self) -> None:
        _valid_ae(self.ae_title, "ae_table.ae_title")
        if not self.host:
            raise ConfigError(f"ae_table entry {self.ae_title}: host is empty")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"ae_table entry {self.ae_title}: port {self.port} out of range")


@dataclass(frozen=True)
class KnownUser:
    """A user who may associate with a username and passcode (PS3.7 D.3.3.7)."""

    username: str = _f("", "The username (primary field).")
    password_hash: str = _f(
        "", "scrypt hash from 'dicom-ai-node hash-password'; empty allows the username alone."
    )

    def __post_init__(self) -> None:
        if not self.username:
            raise ConfigError("users: username is empty")
        if self.password_hash:
            try:
                check_hash(self.password_hash)
            except ValueError as exc:
                raise ConfigError(f"users entry {self.username}: password_hash: {exc}") from exc


@dataclass(frozen=True)
class DicomSettings:
    """The DICOM listener (Storage SCP and Verification SCP)."""

    ae_title: str = _f(
        "DICOM_AI_NODE", "Our AE title; associations calling another one are rejected."
    )
    host: str = _f("0.0.0.0", "Address to bind; 0.0.0.0 listens on every interface.")
    port: int = _f(11112, "TCP port to listen on (the IANA DICOM port is 104 and needs root).")
    require_called_ae_title: bool = _f(
        True, "Reject associations whose Called AE Title is not ours."
    )
    max_pdu: int = _f(131072, "Largest P-DATA PDU we accept, in bytes (0 = unlimited).")
    accept_only_known_callers: bool = _f(
        False,
        "Accept associations only from AE titles in [[ae_table]], each from the addresses "
        "its host resolves to; others are rejected (calling AE title not recognised).",
    )
    max_associations: int = _f(
        64, "Simultaneous associations served; more are rejected as temporarily congested."
    )
    max_associations_per_address: int = _f(
        32, "Simultaneous associations served for one calling host (0: no separate bound)."
    )
    max_pending_connections: int = _f(
        256, "Connections that may wait for their association request at once; more are closed."
    )
    association_request_timeout_s: float = _f(
        10.0, "Seconds a new connection has to send its whole association request."
    )
    user_identity: str = _f(
        "off",
        "User Identity Negotiation (PS3.7 D.3.3.7) against [[users]]: off, optional (checked "
        "when sent) or required (requests without one are rejected).",
    )
    max_instance_mb: int = _f(
        2048,
        "Largest data set accepted in one C-STORE (held in memory while it arrives); "
        "a larger one aborts the association.",
    )
    acse_timeout_s: float = _f(30.0, "Seconds to wait for association messages.")
    dimse_timeout_s: float = _f(60.0, "Seconds to wait for DIMSE messages.")
    network_timeout_s: float = _f(
        60.0,
        "Seconds an idle association is kept open, and the longest one PDU's header, then "
        "its body, may take to arrive (a peer stalling inside a PDU is aborted).",
    )

    def __post_init__(self) -> None:
        _valid_ae(self.ae_title, "dicom.ae_title")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"dicom.port {self.port} out of range")
        if self.max_instance_mb < 1:
            raise ConfigError("dicom.max_instance_mb must be at least 1")
        if self.max_associations < 1 or self.max_pending_connections < 1:
            raise ConfigError("dicom.max_associations and max_pending_connections must be >= 1")
        if self.max_associations_per_address < 0:
            raise ConfigError("dicom.max_associations_per_address must not be negative")


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


#: What [tls] client_certificates may say (see dicom_ai_node.tls).
CLIENT_CERTIFICATE_MODES = ("required", "optional", "none")


@dataclass(frozen=True)
class TlsSettings:
    """DICOM over TLS (PS3.15 B.9, BCP 195): a TLS listener and TLS to chosen peers."""

    enabled: bool = _f(False, "Open a TLS listener (and allow ae_table entries with tls).")
    port: int = _f(2762, "TCP port of the TLS listener (2762: dicom-tls, IANA).")
    certificate: str = _f("", "The node's certificate (PEM), for both directions.")
    private_key: str = _f("", "Private key (PEM, unencrypted) of the certificate.")
    ca_file: str = _f("", "Certificates (PEM) of the authorities whose peers are trusted.")
    client_certificates: str = _f(
        "required", "What the listener asks of callers: required, optional or none."
    )
    plaintext: bool = _f(
        True, "Also listen without TLS on dicom.port; false accepts only TLS connections."
    )

    def __post_init__(self) -> None:
        if self.client_certificates not in CLIENT_CERTIFICATE_MODES:
            raise ConfigError(
                f"tls.client_certificates {self.client_certificates!r} is not one of "
                f"{', '.join(CLIENT_CERTIFICATE_MODES)}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"tls.port {self.port} out of range")
        if self.enabled and not (self.certificate and self.private_key and self.ca_file):
            raise ConfigError("tls.enabled needs tls.certificate, tls.private_key and tls.ca_file")
        if not self.plaintext and not self.enabled:
            raise ConfigError("tls.plaintext = false needs tls.enabled = true (no listener left)")


#: Roles of the web service's users and tokens, from least to most allowed.
WEB_ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class WebSettings:
    """The HTTP service: operator screens, the REST API under /api/v1 and /metrics."""

    enabled: bool = _f(True, "Start the HTTP service with 'serve'.")
    host: str = _f("127.0.0.1", "Address to bind; 0.0.0.0 listens on every interface.")
    port: int = _f(8080, "TCP port of the HTTP service (HTTPS when [tls] enabled is true).")
    session_minutes: int = _f(480, "Minutes a login lasts before the user signs in again.")
    metrics_networks: tuple[str, ...] = _f(
        ("127.0.0.0/8", "::1/128"),
        "Networks (CIDR) whose clients may scrape /metrics without credentials.",
    )
    login_attempts_per_minute: int = _f(
        5, "Failed logins allowed per client address and per username each minute."
    )
    max_body_kb: int = _f(64, "Largest request body accepted, in KiB (413 above).")
    page_size_max: int = _f(500, "Largest page a list endpoint returns.")
    oidc_issuer: str = _f("", "OpenID Connect issuer (iss) whose tokens are accepted; empty: off.")
    oidc_audience: str = _f("", "Audience (aud) the OIDC tokens must name.")
    oidc_jwks_file: str = _f("", "The issuer's signing keys (a JWKS JSON file).")
    oidc_jwks_url: str = _f("", "Where to fetch the issuer's JWKS when no file is given.")
    oidc_role_claim: str = _f("roles", "Claim that holds the user's roles (a string or a list).")
    oidc_username_claim: str = _f("preferred_username", "Claim that names the user.")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"web.port {self.port} out of range")
        for name in ("session_minutes", "login_attempts_per_minute", "max_body_kb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"web.{name} must be at least 1, not {getattr(self, name)!r}")
        if self.page_size_max < 10:
            raise ConfigError(f"web.page_size_max must be at least 10, not {self.page_size_max}")
        if self.oidc_issuer and not (self.oidc_jwks_file or self.oidc_jwks_url):
            raise ConfigError("web.oidc_issuer needs web.oidc_jwks_file or web.oidc_jwks_url")
        for network in self.metrics_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(f"web.metrics_networks: {network!r} is not a network") from exc


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
    destinations: tuple[str, ...] = _f(
        (), "Extra destinations for every result, as AE@HOST:PORT (in addition to the sender)."
    )

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class NodeSettings:
    """The whole configuration of one node."""

    dicom: DicomSettings = field(default_factory=DicomSettings, metadata={"help": "Listener."})
    storage: StorageSettings = field(default_factory=StorageSettings, metadata={"help": "Storage."})
    assemble: AssembleSettings = field(
        default_factory=AssembleSettings, metadata={"help": "Completion."}
    )
    route: RouteSettings = field(default_factory=RouteSettings, metadata={"help": "Routing."})
    infer: InferSettings = field(default_factory=InferSettings, metadata={"help": "Inference."})
    send: SendSettings = field(default_factory=SendSettings, metadata={"help": "Delivery."})
    audit: AuditSettings = field(
        default_factory=AuditSettings, metadata={"help": "Audit trail (IHE ATNA)."}
    )
    tls: TlsSettings = field(default_factory=TlsSettings, metadata={"help": "DICOM over TLS."})
    web: WebSettings = field(
        default_factory=WebSettings, metadata={"help": "HTTP service: screens, API, metrics."}
    )
    privacy: PrivacySettings = field(
        default_factory=PrivacySettings, metadata={"help": "De-identification."}
    )
    ae_table: tuple[KnownAE, ...] = field(
        default=(),
        metadata={"help": "Known peers: [[ae_table]] entries with ae_title, host, port."},
    )
    users: tuple[KnownUser, ...] = field(
        default=(),
        metadata={"help": "Users for dicom.user_identity: [[users]] username, password_hash."},
    )
    base_dir: str = _f(
        ".", "Folder that relative paths are resolved against (the config's folder)."
    )

    def __post_init__(self) -> None:
        if self.dicom.user_identity not in USER_IDENTITY_MODES:
            raise ConfigError(
                f"dicom.user_identity {self.dicom.user_identity!r} is not one of "
                f"{', '.join(USER_IDENTITY_MODES)}"
            )
        if self.dicom.user_identity != "off" and not self.users:
            raise ConfigError("dicom.user_identity needs at least one [[users]] entry")
        tls = self.tls
        for entry in self.ae_table:
            if entry.tls and not (tls.certificate and tls.private_key and tls.ca_file):
                raise ConfigError(
                    f"ae_table entry {entry.ae_title}: tls = true needs tls.certificate,"
                    " tls.private_key and tls.ca_file"
                )

    def path(self, value: str) -> Path:
        """Resolve a configured path against ``base_dir``."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def database_url(self) -> str:
        """The index URL; SQLite beside the storage root when none is configured."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.path(self.storage.root).parent / 'node.db'}"

    def known_ae(self, ae_title: str) -> KnownAE | None:
        """The AE table entry for ``ae_title``, if any."""
        for entry in self.ae_table:
            if entry.ae_title == ae_title.strip():
                return entry
        return None


def _convert(value: Any, typ: Any, where: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if typ in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return typ(value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid {typ}") from exc
    return value


#: Arrays of tables in the file ([[ae_table]], [[users]]) and their entry types.
_TABLES: dict[str, type[Any]] = {"ae_table": KnownAE, "users": KnownUser}


def _build(cls: type[T], data: Mapping[str, Any], env: Mapping[str, str], prefix: str) -> T:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{prefix.lower() or 'top'}]: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        typ = hints[f.name]
        env_key = f"{ENV_PREFIX}{prefix}{f.name}".upper()
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _build(typ, data.get(f.name, {}), env, f"{prefix}{f.name}_")  # type: ignore[arg-type]
        elif f.name in _TABLES:
            kwargs[f.name] = tuple(
                _build(_TABLES[f.name], e, {}, f"{f.name.upper()}_") for e in data.get(f.name, [])
            )
        elif env_key in env:
            kwargs[f.name] = _convert(env[env_key], typ, env_key)
        elif f.name in data:
            kwargs[f.name] = _convert(data[f.name], typ, f"{prefix.lower()}{f.name}")
    return cls(**kwargs)


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> NodeSettings:
    """Read settings from a TOML file (optional) and environment overrides.

    Parameters
    ----------
    path:
        A TOML file as written by ``dicom-ai-node init``; relative paths in it are resolved
        against its folder. ``None`` uses defaults relative to the current directory.
    env:
        Environment to read ``DICOM_AI_NODE_<SECTION>_<KEY>`` overrides from
        (default ``os.environ``).

    Raises
    ------
    ConfigError
        On unknown keys, wrong types or invalid values, naming the key.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        data.setdefault("base_dir", str(Path(path).resolve().parent))
    return _build(NodeSettings, data, env, "")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(settings: NodeSettings | None = None) -> str:
    """Write settings as a commented TOML file (what ``dicom-ai-node init`` prints)."""
    settings = settings or NodeSettings()
    lines = [
        "# dicom-ai-node configuration. Every key is optional; shown with its default.",
        f"# Each key can be overridden by an environment variable {ENV_PREFIX}<SECTION>_<KEY>.",
        "",
    ]
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"[{f.name}]  # {f.metadata['help']}")
            for sub in dataclasses.fields(value):
                lines.append(f"# {sub.metadata['help']}")
                lines.append(f"{sub.name} = {_toml_value(getattr(value, sub.name))}")
            lines.append("")
    lines += [
        "# Known peers. Results go back to the AE that sent a study when it is listed here.",
        "# [[ae_table]]",
        '# ae_title = "PACS"',
        '# host = "10.0.0.5"',
        "# port = 104",
        "",
        "# Users for dicom.user_identity (hash: dicom-ai-node hash-password).",
        "# [[users]]",
        '# username = "modality1"',
        '# password_hash = "scrypt$16384$8$1$..."',
        "",
    ]
    return "\n".join(lines)
