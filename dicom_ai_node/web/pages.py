"""Web: the operator's screens under ``/ui``: sign-in, and the routers of the screens.

Server-rendered HTML (Jinja2, :mod:`.pages_kit`), refreshed by htmx where state changes
(the part that changes has ``hx-get`` on its ``/ui/fragments/...`` twin and
``hx-trigger="every 2s"``; without scripts the page reloads itself every 10 s). The
screens read through the same store functions as the API; every action is a form that
posts to ``/ui/actions/<name>`` (:mod:`.pages_actions`), which calls the same
:mod:`.operations` function as the API does.

Routes
------
``GET/POST /ui/login``, ``POST /ui/logout``; screens (:mod:`.pages_screens`): ``/ui/``
(status), ``/ui/studies``, ``/ui/studies/{uid}``, ``/ui/failures``, ``/ui/destinations``,
``/ui/destinations/{name}``, ``/ui/rules``, ``/ui/associations``, ``/ui/audit`` (admin);
fragments ``/ui/fragments/status``, ``/ui/fragments/studies``, ``/ui/fragments/studies/{uid}``,
``/ui/fragments/failures``, ``/ui/fragments/destinations``,
``/ui/fragments/destinations/{name}``, ``/ui/fragments/associations``; actions
(:mod:`.pages_actions`, operator): ``POST /ui/actions/`` ``rerun``, ``cancel``, ``resend``,
``force-complete``, ``pause``, ``resume``, ``retry``, ``echo``, ``explain``.

Stable ids for browser tests
----------------------------
Every page: ``data-testid="flash"`` (class ``ok`` or ``error``) for an action's outcome,
``whoami`` (user and role), ``logout-submit``; nav links ``nav-status``,
``nav-studies``, ``nav-failures``, ``nav-destinations``, ``nav-rules``,
``nav-associations``, ``nav-audit`` (admin only); ``missing`` on a 404 page.

- Login: ``id="login-username"``, ``"login-password"``, ``"login-submit"``;
  ``data-testid="login-error"``.
- Status: ``status-listener``, ``status-models``, ``model-row`` (``data-model``),
  ``model-<name>-unavailable`` (why it cannot run here), ``queue-<model>``,
  ``disk-free``, ``last-received``, ``outbox-row`` (``data-destination``),
  ``outbox-<destination>`` (pending count).
- Studies: ``id="search-date-from"``, ``"search-date-to"``, ``"search-model"``,
  ``"search-state"``, ``"search-calling-ae"``, ``"search-accession"``,
  ``"search-submit"``; ``search-error``, ``study-row`` (``data-uid``),
  ``study-link-<uid>``, ``study-jobs-<uid>``, ``job-<id>-state``, ``no-studies``,
  ``patient-name``, ``patient-id``, ``patient-birth-date`` (operator and admin only),
  ``next-page``.
- Study: ``study-uid``, ``timeline-state`` (received, complete, routed, inferred,
  encoded, delivered, failed or cancelled), ``stage-<step>`` (class ``reached``),
  ``series-row`` (``data-uid``), ``series-<uid>-state``, ``job-<id>`` (also the element's
  ``id``), ``job-<id>-state``, ``job-<id>-revision`` (``revision N``), ``job-<id>-reason``,
  ``candidate-row``, ``no-jobs``, ``result-<id>``, ``preview-<id>`` (the ``<img>``, also
  its ``id``), ``delivery-row``, ``delivery-<result id>-<destination>`` (its state),
  ``event-history``, ``event-row`` (``data-kind``, ``action`` for an operator's);
  forms (operator): ``rerun-<job id>``, ``cancel-<job id>``, ``resend-<result id>``
  (submit) with ``resend-<result id>-destination`` (select), ``resend-job-<job id>``
  with ``resend-job-<job id>-destination``, ``force-complete-study``,
  ``force-complete-series-<uid>``; ``patient-name``, ``patient-id``,
  ``patient-birth-date`` (operator and admin only).
- Failures: ``failure-group`` (``data-kind``, ``data-cause``), ``retry-group-<n>`` (from
  1, in the table's order), ``retry-all``, ``retry-all-jobs``, ``retry-all-deliveries``,
  ``no-failures``.
- Destinations: ``destination-row`` (``data-destination``), ``destination-link-<name>``,
  ``echo-<name>``, ``pause-destination-<name>``, ``resume-destination-<name>``; detail:
  ``destination-name``, ``destination-paused``, ``outbox-pending``, ``outbox-due``,
  ``outbox-delivered``, ``outbox-failed``, ``outbox-item``, ``attempt-row``,
  ``attempt-<delivery id>-state``, ``echo-submit``, ``pause-submit``, ``resume-submit``.
- Rules: ``model-row`` (``data-model``), ``model-<name>-state`` (active, paused or
  unavailable), ``pause-model-<name>``, ``resume-model-<name>``; ``models-unavailable``,
  ``model-unavailable-row`` (``data-model``), ``model-<name>-reason``;
  ``id="explain-study"``, ``"explain-submit"``, ``explain-output``, ``explain-error``,
  ``rules-file``, ``rules-text``.
- Associations: ``id="assoc-calling-ae"``, ``"assoc-outcome"``, ``"assoc-submit"``;
  ``association-row``, ``association-outcome``, ``allow-list``, ``allow-row``,
  ``accept-only-known``.
- Audit: ``id="audit-event"``, ``"audit-user"``, ``"audit-outcome"``, ``"audit-since"``,
  ``"audit-submit"``; ``audit-row``.
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..store import accounts
from .auth import SESSION_COOKIE, LoginLimiter, Principal, Role, authenticate, client_address
from .pages_actions import router as actions_router
from .pages_kit import HOME, LOGIN_PATH, ctx_of, local_path, page_user, render
from .pages_screens import router as screens_router

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)
_limiter_lock = threading.Lock()
#: Longest user name looked up (longer ones fail without a look).
USERNAME_MAX = 64


def login_limiter(request: Request) -> LoginLimiter:
    """The service's login rate limit (made on first use when the app has none)."""
    state = request.app.state
    with _limiter_lock:
        limiter = getattr(state, "login_limiter", None)
        if not isinstance(limiter, LoginLimiter):
            per_minute = ctx_of(request).settings.web.login_attempts_per_minute
            limiter = state.login_limiter = LoginLimiter(per_minute)
    return limiter


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from this site, as far as the browser says.

    ``Sec-Fetch-Site`` (Fetch Metadata) when sent; else ``Origin``, unless it is
    ``null`` (what a browser sends under ``Referrer-Policy: no-referrer``, as here).
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = HOME) -> Response:
    """The login form; a signed-in user goes on to ``next``."""
    target = local_path(next)
    who = authenticate(request)
    if who is not None and who.via == "session":
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", None, next=target, error="", username="")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = HOME,
) -> Response:
    """Check a user's password and sign them in (a session cookie), rate-limited.

    Each try counts against the client's address and the user name before the password
    is checked (one step, so parallel tries cannot all pass a check made before any of
    them counted); once either used up ``web.login_attempts_per_minute`` the form
    answers 429 without checking. A wrong password answers 401. Every failure is
    audited (User Authentication, failed).
    """
    ctx, address = ctx_of(request), client_address(request)
    target, username = local_path(next), username.strip()
    if not _same_origin(request):
        raise HTTPException(403, "login form posted from another site")
    shown = username[:USERNAME_MAX]

    def refuse(status: int, error: str) -> Response:
        ctx.audit.login(shown, address, ok=False)
        response = render(
            request, "login.html", None, status_code=status, next=target, error=error,
            username=shown,
        )  # fmt: skip
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="dicom-ai-node"'
        return response

    if not login_limiter(request).attempt(address, shown):
        return refuse(429, "Too many sign-ins. Wait a minute and try again.")
    found = None
    if 0 < len(username) <= USERNAME_MAX and password:
        found = accounts.verify_login(ctx.sessions, username, password)
    if found is None:
        return refuse(401, "Wrong user name or password.")
    name, role = found
    login_limiter(request).succeeded(address, shown)  # only failures use up the limit
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        accounts.end_session(ctx.sessions, old)
    minutes = ctx.settings.web.session_minutes
    session_id, _csrf = accounts.new_session(ctx.sessions, name, role, ctx.clock(), minutes)
    ctx.audit.login(name, address, ok=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=minutes * 60,
        path="/",
        secure=ctx.tls,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def logout(
    request: Request, who: Annotated[Principal, Depends(page_user(Role.VIEWER))]
) -> Response:
    """End the session (the form carries the CSRF token) and go back to the login form."""
    ctx = ctx_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        accounts.end_session(ctx.sessions, cookie)
    ctx.audit.login(who.name, client_address(request), ok=True, logout=True)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=ctx.tls, httponly=True, samesite="strict"
    )
    return response


router.include_router(screens_router)
router.include_router(actions_router)
