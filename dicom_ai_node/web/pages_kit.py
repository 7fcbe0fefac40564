"""Web: what the operator's screens share: templates, sign-in for pages, flash messages.

The templates are Jinja2 with autoescaping on for every one of them: whatever a peer
sent (descriptions, AE titles, reasons, error texts) is shown as text, never as markup.
Pages carry no inline script or style (the service's CSP forbids both); htmx, vendored
under ``/static``, refreshes the parts that change.

A page asked for without a session is answered with a redirect to the login form
(303, ``next`` naming the page, a local path only); a fragment asked for by htmx is
answered 401 with ``HX-Redirect``, so the browser goes to the login form instead of
swapping it into the page. An action's outcome travels back to the page in the query
string as a flash message, signed with the session's CSRF token, so a link made by
someone else cannot put words on the screen.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jinja2
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse

from .auth import Principal, Role, require
from .context import WebContext

__all__ = [
    "HOME",
    "LOGIN_PATH",
    "UID_MAX",
    "ctx_of",
    "flash_of",
    "flashed",
    "is_uid",
    "local_path",
    "page_of",
    "page_user",
    "render",
]

TEMPLATES = Path(__file__).parent / "templates"
#: The login form.
LOGIN_PATH = "/ui/login"
#: The status screen, where a login without ``next`` lands.
HOME = "/ui/"
#: Longest flash message shown (the rest is cut).
FLASH_MAX = 400
#: Longest ``next`` or ``back`` path accepted.
PATH_MAX = 2000
#: The query parameters of a flash message.
_FLASH_PARAMS = ("flash", "kind", "fsig")
#: Longest UID (PS3.5 9.1).
UID_MAX = 64
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(text: str) -> bool:
    """Whether ``text`` is a DICOM UID as the API takes one: digits and dots, at most
    :data:`UID_MAX` characters (PS3.5 9.1)."""
    return len(text) <= UID_MAX and _UID.fullmatch(text) is not None


def _when(value: dt.datetime | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SSZ`` (UTC), or a dash."""
    if value is None:
        return "–"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(value: float | None) -> str:
    """A duration in words: ``0.42 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60):02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"


def _between(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """The duration from ``start`` to ``end``, or a dash when either is missing."""
    if start is None or end is None:
        return "–"
    return _seconds(max(0.0, (end - start).total_seconds()))


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / (1024 * 1024):,.0f} MiB"


def _segment(value: object) -> str:
    """``value`` quoted as one path segment (``/`` too)."""
    return quote(str(value), safe="")


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=_when, seconds=_seconds, mib=_mib, segment=_segment)
_env.globals.update(between=_between)


def ctx_of(request: Request) -> WebContext:
    """The service's context."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, WebContext)
    return ctx


def render(
    request: Request,
    template: str,
    who: Principal | None,
    /,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` (a page or a fragment) for ``who``."""
    ctx = ctx_of(request)
    rank = who.role.rank if who is not None else -1
    context.setdefault("back", page_of(request))
    page = _env.get_template(template).render(
        who=who,
        can_act=rank >= Role.OPERATOR.rank,
        is_admin=rank >= Role.ADMIN.rank,
        now=ctx.clock(),
        flash=flash_of(request, who),
        **context,
    )
    return HTMLResponse(page, status_code=status_code)


def page_of(request: Request) -> str:
    """The page the browser shows, without flash parameters: where an action goes back to.

    For an htmx fragment that is the page it was asked from (``HX-Current-URL``).
    """
    if request.headers.get("hx-request"):
        url = urlsplit(request.headers.get("hx-current-url", ""))
        path, pairs = url.path, parse_qsl(url.query, keep_blank_values=True)
    else:
        path, pairs = request.url.path, list(request.query_params.multi_items())
    if path.startswith(("/ui/fragments/", "/ui/actions/")):
        path = HOME
    query = urlencode([(k, v) for k, v in pairs if k not in _FLASH_PARAMS])
    return local_path(path + (f"?{query}" if query else ""))


def local_path(value: str | None, default: str = HOME) -> str:
    """``value`` when it is a path of the screens (``/ui...``), else ``default``.

    Keeps redirects on this site: no scheme, no host, no ``//`` or ``\\`` that a browser
    could read as another host, no control characters.
    """
    if not value or len(value) > PATH_MAX:
        return default
    if not (value == "/ui" or value.startswith(("/ui/", "/ui?"))):
        return default
    if "//" in value or "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _flash_signature(who: Principal, kind: str, text: str) -> str:
    key = who.csrf.encode("utf-8")
    return hmac.new(key, f"{kind}:{text}".encode(), hashlib.sha256).hexdigest()[:32]


def flashed(path: str, who: Principal, text: str, *, ok: bool = True) -> str:
    """``path`` with a flash message for ``who`` in its query string."""
    kind, text = ("ok" if ok else "error"), text[:FLASH_MAX]
    query = urlencode({"flash": text, "kind": kind, "fsig": _flash_signature(who, kind, text)})
    return f"{path}{'&' if '?' in path else '?'}{query}"


def flash_of(request: Request, who: Principal | None) -> dict[str, str] | None:
    """The flash message of this request, when its signature is ``who``'s."""
    params = request.query_params
    text, kind, sent = params.get("flash", ""), params.get("kind", ""), params.get("fsig", "")
    if who is None or not who.csrf or not text or kind not in ("ok", "error"):
        return None
    if not hmac.compare_digest(sent, _flash_signature(who, kind, text[:FLASH_MAX])):
        return None
    return {"kind": kind, "text": text[:FLASH_MAX]}


def login_url(request: Request) -> str:
    """The login form, with ``next`` naming the page asked for (or the page htmx is on)."""
    target = HOME
    if request.headers.get("hx-request"):
        current = urlsplit(request.headers.get("hx-current-url", ""))
        target = local_path(current.path + (f"?{current.query}" if current.query else ""))
    elif request.method == "GET":
        query = request.url.query
        target = local_path(request.url.path + (f"?{query}" if query else ""))
    return f"{LOGIN_PATH}?{urlencode({'next': target})}"


def page_user(role: Role = Role.VIEWER) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the signed-in user of a screen, who must hold ``role``.

    Without credentials a page redirects to the login form (303) and an htmx fragment
    answers 401 with ``HX-Redirect``; a role too low or a missing CSRF token stays 403.
    """
    check = require(role)

    async def dependency(request: Request) -> Principal:
        try:
            return await check(request)
        except HTTPException as exc:
            if exc.status_code != 401:
                raise
            target = login_url(request)
            if request.headers.get("hx-request"):
                raise HTTPException(
                    401, "authentication required", headers={"HX-Redirect": target}
                ) from None
            raise HTTPException(303, "sign in first", headers={"Location": target}) from None

    return dependency
