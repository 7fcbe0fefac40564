"""Core: the settings of who talks to the node: listener, TLS, web, AE table, users.

Part of the tree of :mod:`dicom_ai_node.settings`, which re-exports every class here:
the DICOM listener, DICOM over TLS, the web service, the known AEs and the DICOM users.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import ConfigError
from .passwords import check_hash
from .result_kinds import DEFAULT_RESULTS, RESULT_KINDS
from .settings_sections import _f, check_results

__all__ = [
    "CLIENT_CERTIFICATE_MODES",
    "WEB_ROLES",
    "DicomSettings",
    "KnownAE",
    "KnownUser",
    "TlsSettings",
    "WebSettings",
]


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
    results: tuple[str, ...] = _f(
        DEFAULT_RESULTS, f"Result kinds this AE gets, from {', '.join(RESULT_KINDS)}."
    )

    def __post_init__(self) -> None:
        _valid_ae(self.ae_title, "ae_table.ae_title")
        where = f"ae_table entry {self.ae_title}"
        object.__setattr__(self, "results", check_results(self.results, where))
        if not self.host:
            raise ConfigError(f"ae_table entry {self.ae_title}: host is empty")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"ae_table entry {self.ae_title}: port {self.port} out of range")

    @property
    def address(self) -> str:
        """The AE as a destination names it: ``AE@HOST:PORT`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


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


#: Roles of the web service's users and tokens: ``sender`` may only store instances by
#: STOW-RS and read nothing; then viewer, operator, admin, each allowed what those before
#: it are (least to most allowed).
WEB_ROLES = ("sender", "viewer", "operator", "admin")


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
        5, "Failed logins allowed per client address and per username each minute (429 after)."
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
