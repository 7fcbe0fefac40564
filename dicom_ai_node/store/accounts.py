"""Store: the web service's accounts: local users, API tokens and signed-in sessions.

Only hashes of secrets are kept: scrypt for passwords (:mod:`dicom_ai_node.passwords`),
SHA-256 for API tokens and session cookies (random 256-bit strings, so a fast hash is
enough: nothing can be guessed from it). A token's text is shown once, when it is made.
Roles are ``viewer`` < ``operator`` < ``admin``; what each may do is the web stage's.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import Conflict, NotFound
from ..passwords import hash_password, verify_password
from ..settings import WEB_ROLES
from .db import as_utc
from .tables import ApiToken, WebSession, WebUser

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "TokenInfo",
    "UserInfo",
    "add_token",
    "add_user",
    "check_role",
    "end_session",
    "list_tokens",
    "list_users",
    "new_session",
    "remove_user",
    "revoke_token",
    "session_principal",
    "set_password",
    "token_principal",
    "verify_login",
]

#: The roles, least to most allowed (those the settings name, ``settings.WEB_ROLES``).
ROLES = WEB_ROLES
#: Every API token starts with this (so a leaked one is easy to find in logs and code).
TOKEN_PREFIX = "dan_"
#: ``last_used_at`` of a token is written at most this often (each request would be a write).
LAST_USED_GRANULE = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class UserInfo:
    """A local user as the admin sees it (never the hash)."""

    username: str
    role: str
    created_at: dt.datetime
    disabled: bool


@dataclass(frozen=True)
class TokenInfo:
    """An API token as the admin sees it (never its text nor its hash)."""

    pk: int
    name: str
    role: str
    username: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


def check_role(role: str) -> str:
    """The role as stored; ValueError naming the allowed roles when it is none of them."""
    text = str(role).strip().lower()
    if text not in ROLES:
        raise ValueError(f"{role!r} is not a valid role; allowed: {', '.join(ROLES)}")
    return text


def _check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 64 or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(
            f"{username!r} is not a valid user name: 1 to 64 printable characters, no spaces"
        )
    return name


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _optional_utc(value: dt.datetime | None) -> dt.datetime | None:
    return as_utc(value) if value is not None else None


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches in practice: an unknown user costs one scrypt as a known one."""
    return hash_password(secrets.token_urlsafe(32))


def add_user(
    sessions: sessionmaker[Session], username: str, password: str, role: str, now: dt.datetime
) -> None:
    """Add a local user with an scrypt hash of ``password``.

    Raises
    ------
    ValueError
        When the name, the password (empty) or the role is not valid.
    Conflict
        When a user of this name exists.
    """
    name, role = _check_username(username), check_role(role)
    if not password:
        raise ValueError("the password must not be empty")
    with sessions.begin() as session:
        if session.scalars(select(WebUser.pk).where(WebUser.username == name)).first():
            raise Conflict(f"user {name!r} exists")
        session.add(
            WebUser(
                username=name,
                password_hash=hash_password(password),
                role=role,
                created_at=now,
                disabled=False,
            )
        )


def set_password(sessions: sessionmaker[Session], username: str, password: str) -> None:
    """Give a user a new password; their signed-in sessions end.

    Raises
    ------
    ValueError
        When the password is empty.
    NotFound
        When there is no such user.
    """
    if not password:
        raise ValueError("the password must not be empty")
    with sessions.begin() as session:
        changed = session.execute(
            update(WebUser)
            .where(WebUser.username == username)
            .values(password_hash=hash_password(password))
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"no user {username!r}")
        session.execute(delete(WebSession).where(WebSession.username == username))


def list_users(sessions: sessionmaker[Session]) -> list[UserInfo]:
    """Every local user, by name."""
    with sessions() as session:
        rows = session.scalars(select(WebUser).order_by(WebUser.username)).all()
        return [UserInfo(u.username, u.role, as_utc(u.created_at), u.disabled) for u in rows]


def remove_user(sessions: sessionmaker[Session], username: str) -> None:
    """Remove a user and end their sessions (their API tokens stay until revoked).

    Raises
    ------
    NotFound
        When there is no such user.
    """
    with sessions.begin() as session:
        removed = session.execute(delete(WebUser).where(WebUser.username == username))
        if not removed.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"no user {username!r}")
        session.execute(delete(WebSession).where(WebSession.username == username))


def verify_login(
    sessions: sessionmaker[Session], username: str, password: str
) -> tuple[str, str] | None:
    """The user's name and role when the password is theirs, else None.

    An unknown or disabled user takes as long as a wrong password (one scrypt check), so
    the answer's timing does not tell which user names exist.
    """
    with sessions() as session:
        user = session.scalars(select(WebUser).where(WebUser.username == username)).first()
        found = (user.username, user.role, user.password_hash, user.disabled) if user else None
    encoded = found[2] if found else _dummy_hash()
    try:
        matches = verify_password(password.encode("utf-8"), encoded)
    except ValueError:  # a hash the node cannot read never matches
        matches = False
    if found is None or not matches or found[3]:
        return None
    return found[0], found[1]


def add_token(
    sessions: sessionmaker[Session],
    name: str,
    role: str,
    expires_at: dt.datetime | None,
    username: str,
    now: dt.datetime,
) -> tuple[int, str]:
    """Make an API token; returns its key and its text (``dan_...``), shown only now.

    Parameters
    ----------
    name:
        What it is for (shown in lists and the audit trail), 1 to 64 characters.
    role:
        What it may do.
    expires_at:
        When it stops working; None: until revoked.
    username:
        Who made it; ``""`` when made from a shell.
    now:
        The current time.

    Raises
    ------
    ValueError
        When the name or role is not valid, or ``expires_at`` is not after ``now``.
    """
    role = check_role(role)
    label = name.strip()
    if not label or len(label) > 64:
        raise ValueError(f"{name!r} is not a valid token name: 1 to 64 characters")
    if expires_at is not None and expires_at <= now:
        raise ValueError("the token's expiry must be in the future")
    text = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as session:
        row = ApiToken(
            name=label,
            token_hash=_sha256(text),
            role=role,
            username=username,
            created_at=now,
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        return row.pk, text


def list_tokens(sessions: sessionmaker[Session]) -> list[TokenInfo]:
    """Every API token, revoked and expired ones too, oldest first."""
    with sessions() as session:
        return [
            TokenInfo(
                pk=t.pk,
                name=t.name,
                role=t.role,
                username=t.username,
                created_at=as_utc(t.created_at),
                expires_at=_optional_utc(t.expires_at),
                revoked_at=_optional_utc(t.revoked_at),
                last_used_at=_optional_utc(t.last_used_at),
            )
            for t in session.scalars(select(ApiToken).order_by(ApiToken.pk))
        ]


def revoke_token(sessions: sessionmaker[Session], pk: int, now: dt.datetime) -> None:
    """Revoke a token from now on (revoking it again changes nothing).

    Raises
    ------
    NotFound
        When there is no such token.
    """
    with sessions.begin() as session:
        row = session.get(ApiToken, pk)
        if row is None:
            raise NotFound(f"no token {pk}")
        if row.revoked_at is None:
            row.revoked_at = now


def token_principal(
    sessions: sessionmaker[Session], plaintext: str, now: dt.datetime
) -> tuple[str, str] | None:
    """The token's name and role, or None when it is unknown, revoked or expired.

    Records when it was used (at most once a minute, to spare the database writes).
    """
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    digest = _sha256(plaintext)
    with sessions() as session:  # a read: no write lock unless the use is recorded
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and as_utc(row.expires_at) <= now:
            return None
        name, role, pk, used = row.name, row.role, row.pk, row.last_used_at
    if used is None or as_utc(used) < now - LAST_USED_GRANULE:
        with sessions.begin() as session:
            session.execute(
                update(ApiToken)
                .where(
                    ApiToken.pk == pk,
                    or_(
                        ApiToken.last_used_at.is_(None),
                        ApiToken.last_used_at < now - LAST_USED_GRANULE,
                    ),
                )
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
    return name, role


def new_session(
    sessions: sessionmaker[Session], username: str, role: str, now: dt.datetime, minutes: float
) -> tuple[str, str]:
    """Sign a user in for ``minutes``; returns the session id (the cookie) and its CSRF token.

    Sessions that expired are removed at the same time.
    """
    role = check_role(role)
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with sessions.begin() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at <= now))
        session.add(
            WebSession(
                session_hash=_sha256(session_id),
                username=username,
                role=role,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + dt.timedelta(minutes=minutes),
            )
        )
    return session_id, csrf


def session_principal(
    sessions: sessionmaker[Session], session_id: str, now: dt.datetime
) -> tuple[str, str, str] | None:
    """The user name, role and CSRF token of a session, or None when unknown or expired."""
    digest = _sha256(session_id)
    with sessions() as session:
        row = session.scalars(select(WebSession).where(WebSession.session_hash == digest)).first()
        if row is None or as_utc(row.expires_at) <= now:
            return None
        return row.username, row.role, row.csrf_token


def end_session(sessions: sessionmaker[Session], session_id: str) -> None:
    """Sign out: the session is removed (an unknown one is ignored)."""
    with sessions.begin() as session:
        session.execute(delete(WebSession).where(WebSession.session_hash == _sha256(session_id)))
