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
reads the audit trail and manages tokens. A sender stands below them all: it may only store
instances by STOW-RS (PS3.18 10.5), which no other role may (:func:`require_sender`), so a
sending system's token can neither read nor steer anything. Every refusal is audited.
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
from starlette.concurrency import run_in_threadpool

from ..store import accounts
from ..store.accounts import TOKEN_PREFIX
from .context import ctx_of
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
    "require_sender",
]

SESSION_COOKIE = "dan_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
#: Methods that change nothing (RFC 9110 9.2.1); every other one needs the CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.StrEnum):
    """What a user or token may do; from viewer on, each role may do everything of the
    ones before it; a sender may only store (STOW-RS)."""

    SENDER = "sender"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """-1 for sender (below every screen), 0 for viewer, 1 for operator, 2 for admin."""
        return list(Role).index(self) - 1

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
    """Login attempts per client address and per username within a minute.

    :meth:`attempt` counts an attempt before the password is checked, in one step, so
    parallel requests cannot all pass a check made before any of them is counted; a login
    that succeeds takes its attempt back (:meth:`succeeded`). Only
    attempts that were let through are remembered, so a flood of made-up usernames from
    one address stops at that address's limit. At most ``max_keys`` addresses and
    usernames are remembered; keys whose minute is over are forgotten first, and while
    the table is full of live keys a new key is refused (fail closed: during a flood from
    more than ``max_keys`` addresses, logins from new addresses wait for a minute).
    """

    def __init__(self, per_minute: int, max_keys: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> deque[float] | None:
        times = self._attempts.get(key)
        if times is None:
            return None
        while times and now - times[0] > 60.0:
            times.popleft()
        return times

    def _room_for(self, new_keys: int, now: float) -> bool:
        """Forget expired keys (oldest first) until ``new_keys`` more fit."""
        while len(self._attempts) + new_keys > self.max_keys and self._attempts:
            oldest = next(iter(self._attempts))
            if self._live(oldest, now):
                return False
            del self._attempts[oldest]
        return True

    def blocked(self, address: str, username: str) -> bool:
        """Whether this address or this username used up its attempts this minute."""
        now = time.monotonic()
        with self._lock:
            return any(
                len(self._live(key, now) or ()) >= self.per_minute
                for key in (f"a:{address}", f"u:{username}")
            )

    def attempt(self, address: str, username: str) -> bool:
        """Count one login attempt; False (nothing counted) when over the limit."""
        now = time.monotonic()
        keys = (f"a:{address}", f"u:{username}")
        with self._lock:
            found = [self._live(key, now) for key in keys]
            if any(t is not None and len(t) >= self.per_minute for t in found):
                return False
            if not self._room_for(sum(t is None for t in found), now):
                return False
            for key in keys:
                self._attempts.setdefault(key, deque(maxlen=self.per_minute)).append(now)
                self._attempts.move_to_end(key)
            return True

    def succeeded(self, address: str, username: str) -> None:
        """Take back the attempt :meth:`attempt` counted last for a login that succeeded,
        so that only failed logins use up the limit."""
        with self._lock:
            for key in (f"a:{address}", f"u:{username}"):
                times = self._attempts.get(key)
                if times:
                    times.pop()


_ctx = ctx_of


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
            # "token NAME": never taken for a user of that name in the trail
            return Principal(f"token {found[0]}", Role(found[1]), "token") if found else None
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


#: Refused requests recorded in the audit trail per client address, method and path each
#: minute; beyond that they are refused all the same, without a record each, so a flood
#: cannot fill the log (refusals happen on the service's own routes only: bounded).
REFUSALS_AUDITED_PER_MINUTE = 10


def _record_refusal(request: Request, who: Principal | None, reason: str) -> None:
    address = client_address(request)
    limiter = getattr(request.app.state, "refusals_audited", None)
    if not isinstance(limiter, LoginLimiter):
        limiter = request.app.state.refusals_audited = LoginLimiter(REFUSALS_AUDITED_PER_MINUTE)
    route = f"{address} {request.method} {request.url.path[:200]}"
    if limiter.attempt(route, route):
        _ctx(request).audit.refused(
            who.name if who else "", address, request.method, request.url.path, reason
        )


async def _refuse(
    request: Request, who: Principal | None, status: int, reason: str
) -> HTTPException:
    """The refusal to raise, after recording it (in a worker thread: the audit trail
    fsyncs)."""
    await run_in_threadpool(_record_refusal, request, who, reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status, reason, headers=headers)


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``role`` or a higher one.

    401 without valid credentials, 403 with a role too low or a cookie request without
    its CSRF token; both are recorded in the audit trail. The index is read in a worker
    thread, never on the event loop.
    """

    async def dependency(request: Request) -> Principal:
        who = await run_in_threadpool(authenticate, request)
        if who is None:
            raise await _refuse(request, None, 401, "authentication required")
        if who.role.rank < role.rank:
            raise await _refuse(request, who, 403, f"the {role.value} role is required")
        if who.via == "session" and request.method not in SAFE_METHODS:
            sent = await _csrf_token(request)
            if not (sent and hmac.compare_digest(sent, who.csrf)):
                raise await _refuse(request, who, 403, "missing or wrong CSRF token")
        return who

    return dependency


def require_sender() -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold the ``sender`` role, the only one that may
    store instances (STOW-RS, PS3.18 10.5).

    401 without valid credentials, 403 for every other role (an admin makes a sender
    token instead) or a cookie request without its CSRF token; both are audited.
    """

    async def dependency(request: Request) -> Principal:
        who = await run_in_threadpool(authenticate, request)
        if who is None:
            raise await _refuse(request, None, 401, "authentication required")
        if who.role is not Role.SENDER:
            raise await _refuse(request, who, 403, "the sender role is required")
        if who.via == "session":
            sent = await _csrf_token(request)
            if not (sent and hmac.compare_digest(sent, who.csrf)):
                raise await _refuse(request, who, 403, "missing or wrong CSRF token")
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
