"""Receive: User Identity Negotiation (PS3.7 D.3.3.7) checked before an association exists.

A calling application may send a username, or a username and passcode, in the
A-ASSOCIATE-RQ's User Information item. The node keeps only scrypt hashes of the
passcodes (``[[users]]``; :mod:`dicom_ai_node.passwords`) and checks the identity in
the gate (:mod:`.server`), from the request bytes, so that
``dicom.user_identity = "required"`` can refuse requests that carry none; pynetdicom
itself accepts those.

Kerberos, SAML and JWT identities (types 3-5) are not supported and are refused.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..passwords import USER_IDENTITY_MODES, verify_password

__all__ = ["UserCheck", "UserIdentity", "user_identity"]

log = logging.getLogger(__name__)

_RQ_FIXED = 74  # PDU header (6) + fixed fields of the A-ASSOCIATE-RQ (68), PS3.8 9.3.2
_USER_INFORMATION = 0x50
_USER_IDENTITY = 0x58


@dataclass(frozen=True)
class UserIdentity:
    """A User Identity sub-item of an A-ASSOCIATE-RQ (PS3.7 D.3.3.7.1)."""

    #: 1 username, 2 username and passcode, 3 Kerberos, 4 SAML, 5 JWT.
    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes

    @property
    def username(self) -> str:
        """The primary field as text (types 1 and 2: UTF-8, PS3.7 D.3.3.7.1)."""
        return self.primary_field.decode("utf-8", "replace")


def _items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """``(type, value start, value end)`` of each item in ``data[start:end]`` (PS3.8 9.3.2)."""
    items = []
    offset = start
    while offset + 4 <= end:
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if offset + 4 + length > end:
            raise ValueError("an item of the A-ASSOCIATE-RQ runs past its end")
        items.append((data[offset], offset + 4, offset + 4 + length))
        offset += 4 + length
    return items


def user_identity(request: bytes) -> UserIdentity | None:
    """The User Identity sub-item of an A-ASSOCIATE-RQ PDU, or None when it has none.

    Raises
    ------
    ValueError
        When an item's length runs past the PDU or the sub-item's fields past the item.
    """
    for kind, start, end in _items(request, _RQ_FIXED, len(request)):
        if kind != _USER_INFORMATION:
            continue
        for sub, s_start, s_end in _items(request, start, end):
            if sub != _USER_IDENTITY:
                continue
            body = request[s_start:s_end]
            if len(body) < 4:
                raise ValueError("User Identity sub-item too short")
            primary_len = int.from_bytes(body[2:4], "big")
            secondary_at = 4 + primary_len
            if secondary_at + 2 > len(body):
                raise ValueError("User Identity primary field runs past the sub-item")
            secondary_len = int.from_bytes(body[secondary_at : secondary_at + 2], "big")
            if secondary_at + 2 + secondary_len > len(body):
                raise ValueError("User Identity secondary field runs past the sub-item")
            return UserIdentity(
                body[0],
                bool(body[1]),
                bytes(body[4:secondary_at]),
                bytes(body[secondary_at + 2 : secondary_at + 2 + secondary_len]),
            )
    return None


class UserCheck:
    """Checks the identity of association requests against the configured users.

    Parameters
    ----------
    mode:
        One of :data:`USER_IDENTITY_MODES`.
    users:
        Username -> password hash (:func:`~dicom_ai_node.passwords.hash_password`); an
        empty hash means a user allowed with a username only (type 1).
    on_refused:
        Called with the username (possibly empty), the caller's address and the reason
        of each refusal (the audit trail's User Authentication failure).

    A passcode that matched once is remembered (as a keyed digest, in memory) so that a
    sender opening many associations pays the scrypt cost once.
    """

    def __init__(
        self,
        mode: str,
        users: Mapping[str, str],
        on_refused: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if mode not in USER_IDENTITY_MODES:
            raise ValueError(f"user identity mode {mode!r} not in {USER_IDENTITY_MODES}")
        self.mode = mode
        self.users = dict(users)
        self.on_refused = on_refused
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def refusal(self, request: bytes, address: str) -> str | None:
        """Why the request must be refused, or None when it may go on."""
        if self.mode == "off":
            return None
        try:
            identity = user_identity(request)
        except ValueError as exc:
            return self._refuse("", address, str(exc))
        if identity is None:
            if self.mode == "required":
                return self._refuse("", address, "no user identity sent")
            return None
        username = identity.username
        if identity.identity_type not in (1, 2):
            return self._refuse(username, address, f"identity type {identity.identity_type}")
        if username not in self.users:
            return self._refuse(username, address, "unknown user")
        if not self._passcode_ok(identity):
            return self._refuse(username, address, "wrong passcode")
        return None

    def _passcode_ok(self, identity: UserIdentity) -> bool:
        encoded = self.users[identity.username]
        if not encoded:  # a username-only user
            return identity.identity_type == 1
        if identity.identity_type != 2:
            return False
        seen = hmac.new(self._key, identity.secondary_field, "sha256").digest()
        with self._lock:
            if hmac.compare_digest(self._verified.get(identity.username, b""), seen):
                return True
        if not verify_password(identity.secondary_field, encoded):
            return False
        with self._lock:
            self._verified[identity.username] = seen
        return True

    def _refuse(self, username: str, address: str, reason: str) -> str:
        if self.on_refused is not None:
            try:
                self.on_refused(username, address, reason)
            except Exception:  # the refusal goes ahead whatever the report does
                log.exception("cannot report a refused user from %s", address)
        return reason
