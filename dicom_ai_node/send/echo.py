"""Send: C-ECHO a destination, the "test" button of an operator (PS3.4 A.4, PS3.7 9.1.5)."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ..errors import ConfigError
from .net import NodeAE, Peer, check_calling_ae_title

__all__ = ["EchoResult", "echo"]

#: C-ECHO status Success (PS3.7 9.1.5.1.4).
SUCCESS = 0x0000


@dataclass(frozen=True)
class EchoResult:
    """What a C-ECHO found: whether the peer answered Success, its status, and why not."""

    ok: bool
    status: int | None
    message: str
    seconds: float


def echo(
    destination: str,
    *,
    calling_ae_title: str,
    timeout_s: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> EchoResult:
    """Associate with ``destination`` (``AE@HOST:PORT``), send one C-ECHO and release.

    Never raises for what the peer does: a refused association, a timeout or a failure
    status is an :class:`EchoResult` with ``ok`` false and the reason.
    """
    started = time.monotonic()

    def done(ok: bool, status: int | None, message: str) -> EchoResult:
        return EchoResult(ok, status, message, round(time.monotonic() - started, 3))

    try:
        peer = Peer.parse(destination)
        ae = NodeAE(ae_title=check_calling_ae_title(calling_ae_title))
    except ConfigError as exc:
        return done(False, None, str(exc))
    for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, attr, timeout_s)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, tls_args=(tls, peer.host) if tls else None
    )
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted or unreachable"
        return done(False, None, f"association {why}")
    try:
        status = assoc.send_c_echo()
        code = int(status.Status) if status is not None and "Status" in status else None
    finally:
        assoc.release()
    if code is None:
        return done(False, None, "no C-ECHO response (timeout or abort)")
    return done(code == SUCCESS, code, "success" if code == SUCCESS else f"status 0x{code:04X}")
