"""Core: the User Identity modes and the scrypt hashes of passcodes (PS3.7 D.3.3.7).

The node keeps only scrypt hashes of the passcodes (``[[users]]``; ``dicom-ai-node
hash-password`` makes them). The settings check each hash when they are read; the
receive stage checks passcodes against them (:mod:`dicom_ai_node.receive.users`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = [
    "USER_IDENTITY_MODES",
    "check_hash",
    "hash_password",
    "verify_password",
]

#: ``dicom.user_identity``: ignore identities, check those sent, or require one.
USER_IDENTITY_MODES = ("off", "optional", "required")

#: scrypt cost (RFC 7914): N = 2**14, r = 8, p = 1 (16 MiB, ~50 ms per check here).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password``, for ``[[users]] password_hash``."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """The parts of a :func:`hash_password` string; ValueError when it is not one."""
    scheme, n, r, p, salt, digest = encoded.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    return int(n), int(r), int(p), base64.b64decode(salt), base64.b64decode(digest)


def check_hash(encoded: str) -> None:
    """Raise ValueError when ``encoded`` is not a password hash the node can check."""
    n, r, p, salt, digest = _parse_hash(encoded)
    if n < 2**14 or n & (n - 1) or r < 1 or p < 1 or len(salt) < 16 or len(digest) != 32:
        raise ValueError("scrypt parameters weaker than N=2**14, r=8, p=1 or malformed")


def verify_password(password: bytes, encoded: str) -> bool:
    """Whether ``password`` matches the hash (constant-time comparison)."""
    n, r, p, salt, digest = _parse_hash(encoded)
    got = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**26)
    return hmac.compare_digest(got, digest)
