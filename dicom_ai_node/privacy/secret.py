"""Privacy: the node's de-identification secret and the pseudonyms keyed with it.

Replacement UIDs and pseudonymous patient identifiers are HMAC-SHA256 digests of the
original value under one per-node secret: the same original always gives the same
replacement (a re-send of a study gets the UIDs it got before, every series of a patient
the same pseudonym), and no one without the secret can compute or invert them (PS3.15
E.1.1 asks that replacements not be derivable from the originals by others).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from ..durable import fsync_dir
from ..errors import ConfigError
from ..settings import NodeSettings

__all__ = [
    "SECRET_BYTES",
    "Pseudonyms",
    "load_or_create_secret",
    "secret_file_path",
]

#: Length of a generated secret; a shorter one read from a file is refused.
SECRET_BYTES = 32
#: The root of replacement UIDs: UUID-derived UIDs (PS3.5 B.2).
UUID_ROOT = "2.25."


def secret_file_path(settings: NodeSettings) -> Path:
    """Where ``privacy.secret_file`` points; by default ``<storage.root>/../privacy/secret``."""
    if settings.privacy.secret_file:
        return settings.path(settings.privacy.secret_file)
    return settings.path(settings.storage.root).parent / "privacy" / "secret"


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"privacy secret {path} is readable by others (mode {stat.filemode(mode)}); "
            "chmod 600 it"
        )
    try:
        secret = bytes.fromhex(path.read_text("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"privacy secret {path} is not hexadecimal text") from exc
    if len(secret) < SECRET_BYTES:
        raise ConfigError(f"privacy secret {path} is shorter than {SECRET_BYTES} bytes")
    return secret


def load_or_create_secret(path: Path) -> bytes:
    """Read the node's secret, creating it (random, mode 0600) if the file does not exist.

    The new secret is written to a temporary file, fsynced and linked to ``path`` (so a
    crash never leaves a half-written secret, and of two processes starting at once the
    second reads the first one's), then the folder is fsynced.

    Parameters
    ----------
    path:
        The secret file: 64 hexadecimal digits (:data:`SECRET_BYTES` bytes) and a newline.

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    ConfigError
        If the file is readable by group or others, not hexadecimal, or too short.
    """
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (secrets.token_bytes(SECRET_BYTES).hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass  # another process made it first: use that one
    finally:
        temp.unlink()
    fsync_dir(path.parent)
    return _read_secret(path)


class Pseudonyms:
    """Replacement values derived from originals with HMAC-SHA256 under the node secret.

    Parameters
    ----------
    secret:
        At least :data:`SECRET_BYTES` bytes (see :func:`load_or_create_secret`).

    Raises
    ------
    ValueError
        If the secret is too short.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the de-identification secret needs {SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:  # never show the secret
        return "Pseudonyms(<secret>)"

    def _digest(self, kind: str, *parts: str) -> bytes:
        # One JSON array keeps ("ab", "c") and ("a", "bc") apart.
        message = json.dumps([kind, *parts], ensure_ascii=False).encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The replacement of a UID (Table E.1-1 action U): ``2.25.<UUID as integer>``.

        The first 128 bits of the digest become a UUID of version 8 (RFC 9562, custom),
        written as a decimal integer below ``2.25`` (PS3.5 B.2): at most 44 characters.
        """
        raw = bytearray(self._digest("uid", original)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        return UUID_ROOT + str(int.from_bytes(raw, "big"))

    def _code(self, kind: str, *parts: str) -> str:
        # 80 bits in base 32: 16 characters of A-Z and 2-7, unambiguous in any charset.
        return base64.b32encode(self._digest(kind, *parts)[:10]).decode("ascii")

    def patient_id(self, key: tuple[str, str]) -> str:
        """The pseudonymous Patient ID (LO) of a patient key (see :meth:`patient_key`)."""
        return "ANON" + self._code("patient", *key)

    def patient_name(self, key: tuple[str, str]) -> str:
        """The pseudonymous Patient's Name (PN): ``ANONYMIZED^<code of the patient>``."""
        return "ANONYMIZED^" + self._code("patient", *key)

    @staticmethod
    def patient_key(
        patient_id: str, issuer: str, patient_name: str, study_uid: str
    ) -> tuple[str, str]:
        """What identifies a patient for its pseudonym.

        The Patient ID with its issuer; without a Patient ID, the name; without either,
        the study (each such study is then a patient of its own).
        """
        if patient_id.strip():
            return ("id", f"{issuer.strip()}\\{patient_id.strip()}")
        if patient_name.strip():
            return ("name", patient_name.strip())
        return ("study", study_uid)
