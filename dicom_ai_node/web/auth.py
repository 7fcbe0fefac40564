"""Web: who is asking and what they may do: sessions, API tokens, OIDC, roles, CSRF.

A request is authenticated by one of

- a session cookie from the login form (a random id; the index keeps its SHA-256), which is
  ``HttpOnly``, ``SameSite=Strict`` and, with TLS, ``Secure``; every unsafe request made
  with it carries the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf``);
- ``Authorization: Bearer dan_...``, an API token (stored hashed, with a role, revocable,
  optionally expiring);
- ``Authorization: Bearer <JWT>`` from the configured OpenID Connect issuer, checked against
  its JWKS, the role taken from a configured claim (RFC 7519, OpenID Connect Core 1.0).

Roles are ordered: a viewer reads every screen but the audit trail and never sees patient
names, IDs or birth dates; an operator also acts and sees patient fields; an admin also
reads the audit trail and manages tokens. Every refusal is audited.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

from ..store import accounts
from .context import WebContext
from .oidc import OidcVerifier

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "LoginLimiter",
    "Principal",
    "Role",
    "authenticate",
    "client_address",
    "require",
]

SESSION_COOKIE = "dan_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
#: Methods that change nothing (RFC 9110 9.2.1); every other one needs the CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_PREFIX = "dan_"


class Role(enum.StrEnum):
    """What a user or token may do; each role may do everything of the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 for viewer, 1 for operator, 2 for admin."""
        return list(Role).index(self)

    @property
    def sees_patient(self) -> bool:
        """Whether this role may see patient names, IDs and birth dates."""
        return self.rank >= Role.OPERATOR.rank


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes
    ----------
    name:
        The username, token name or OIDC subject (what the audit trail records).
    via:
        ``session``, ``token`` or ``oidc``.
    csrf:
        The session's CSRF token (sessions only).
    """

    name: str
    role: Role
    via: str
    csrf: str = ""


def client_address(request: Request) -> str:
    """The peer's IP address (no proxy headers are trusted)."""
    return request.client.host if request.client else ""


class LoginLimiter:
    """Failed logins per client address and per username within a minute.

    Bounded: at most ``max_keys`` addresses and usernames are remembered (the oldest are
    forgotten first), so a flood of made-up usernames cannot grow it without end.
    """

    def __init__(self, per_minute: int, max_keys: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.per_minute + 1)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        while times and now - times[0] > 60.0:
            times.popleft()
        return times

    def blocked(self, address: str, username: str) -> bool:
        """Whether this address or this username used up its failures this minute."""
        now = time.monotonic()
        with self._lock:
            return any(
                len(self._recent(key, now)) >= self.per_minute
                for key in (f"a:{address}", f"u:{username}")
            )

    def failed(self, address: str, username: str) -> None:
        """Count one failed login."""
        now = time.monotonic()
        with self._lock:
            for key in (f"a:{address}", f"u:{username}"):
                self._recent(key, now).append(now)
                self._failures.move_to_end(key)


def _ctx(request: Request) -> WebContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, WebContext)
    return ctx


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(request: Request) -> Principal | None:
    """The caller, from a bearer token or the session cookie; None when neither holds."""
    ctx = _ctx(request)
    now = ctx.clock()
    token = _bearer(request)
    if token is not None:
        if token.startswith(TOKEN_PREFIX):
            found = accounts.token_principal(ctx.sessions, token, now)
            return Principal(found[0], Role(found[1]), "token") if found else None
        verifier: OidcVerifier | None = request.app.state.oidc
        if verifier is None:
            return None
        claims = verifier.verify(token)
        return Principal(claims[0], Role(claims[1]), "oidc") if claims else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session = accounts.session_principal(ctx.sessions, cookie, now)
        if session is not None:
            return Principal(session[0], Role(session[1]), "session", session[2])
    return None


async def _csrf_token(request: Request) -> str:
    sent = request.headers.get(CSRF_HEADER, "")
    if sent:
        return sent
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD, "")
        return value if isinstance(value, str) else ""
    return ""


def _refuse(request: Request, who: Principal | None, status: int, reason: str) -> HTTPException:
    ctx = _ctx(request)
    ctx.audit.refused(
        who.name if who else "", client_address(request), request.method, request.url.path, reason
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status, reason, headers=headers)


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``role`` or a higher one.

    401 without valid credentials, 403 with a role too low or a cookie request without
    its CSRF token; both are recorded in the audit trail.
    """

    async def dependency(request: Request) -> Principal:
        who = authenticate(request)
        if who is None:
            raise _refuse(request, None, 401, "authentication required")
        if who.role.rank < role.rank:
            raise _refuse(request, who, 403, f"the {role.value} role is required")
        if who.via == "session" and request.method not in SAFE_METHODS:
            sent = await _csrf_token(request)
            if not (sent and hmac.compare_digest(sent, who.csrf)):
                raise _refuse(request, who, 403, "missing or wrong CSRF token")
        return who

    return dependency


def metrics_allowed(request: Request) -> bool:
    """Whether ``/metrics`` answers this client without credentials (``web.metrics_networks``)."""
    ctx = _ctx(request)
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net, strict=False)
        for net in ctx.settings.web.metrics_networks
    )
