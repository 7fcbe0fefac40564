"""Core: TLS contexts for DICOM over TLS, as the node's SCP and SCU use them.

PS3.15 B.9 (BCP 195 TLS Secure Transport Connection Profile) and B.10 (the
non-downgrading variant) take their rules from BCP 195 (RFC 9325): TLS 1.2 or 1.3
only, and with TLS 1.2 only ephemeral key exchange with AES-GCM,
e.g. ``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``. Certificates are checked against the
site's CA bundle; the peer must present one unless the operator says otherwise.

Both directions use one identity (the node's certificate and private key) and one
bundle of trusted certificate authorities.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "BCP195_CIPHERS",
    "CLIENT_CERTIFICATES",
    "TlsFiles",
    "client_context",
    "server_context",
]

#: TLS 1.2 cipher suites (OpenSSL names) allowed by BCP 195: ephemeral (EC)DH key
#: exchange, AES-GCM, authenticated. TLS 1.3 suites are all AEAD and always allowed.
BCP195_CIPHERS = "ECDHE+AESGCM:DHE+AESGCM:!aNULL:!eNULL:!PSK:!SRP"

#: Whether an SCP asks its peers for a certificate: ``required`` (mutual
#: authentication, the default), ``optional`` (checked when one is sent), ``none``.
CLIENT_CERTIFICATES = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


@dataclass(frozen=True)
class TlsFiles:
    """The node's TLS identity and trust, as PEM files.

    Parameters
    ----------
    certificate:
        The node's certificate (its chain may follow in the same file).
    private_key:
        The certificate's private key, unencrypted (the node starts unattended).
    ca_file:
        Certificates of the authorities whose peer certificates are trusted.
    client_certificates:
        What the SCP asks of callers: a key of :data:`CLIENT_CERTIFICATES`.
    """

    certificate: Path
    private_key: Path
    ca_file: Path
    client_certificates: str = "required"

    def __post_init__(self) -> None:
        if self.client_certificates not in CLIENT_CERTIFICATES:
            raise ConfigError(
                f"tls.client_certificates must be one of {', '.join(CLIENT_CERTIFICATES)},"
                f" not {self.client_certificates!r}"
            )


def _profile(context: ssl.SSLContext, files: TlsFiles) -> ssl.SSLContext:
    """BCP 195 versions and suites, the node's identity and the trusted authorities."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(files.certificate, files.private_key)
        context.load_verify_locations(cafile=files.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load the certificate, key or CA file: {exc}") from exc
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A context for the SCP's TLS listener (PS3.15 B.9).

    Raises
    ------
    ConfigError
        If a file cannot be read or does not hold what it should.
    """
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), files)
    context.verify_mode = CLIENT_CERTIFICATES[files.client_certificates]
    return context


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A context for the SCU: the peer's certificate must be trusted and name its host.

    Raises
    ------
    ConfigError
        If a file cannot be read or does not hold what it should.
    """
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), files)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context
