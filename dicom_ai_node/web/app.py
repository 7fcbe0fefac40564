"""Web: the ASGI application: health, metrics, the REST API, the screens.

FastAPI builds the OpenAPI 3.1 document from the typed endpoints and serves it at
``/api/v1/openapi.json`` (the interactive docs, which load scripts from a CDN, are off).
Every response carries headers that keep the pages to their own origin (CSP), out of
frames and un-sniffed; bodies over ``web.max_body_kb`` are refused with 413 before they
are read whole, except a STOW-RS request's (:mod:`.stow`), bounded by its own limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..store.db import index_answers
from .api import router as api_router
from .api_actions import router as actions_router
from .auth import Principal, Role, authenticate, metrics_allowed, require
from .context import WebContext
from .oidc import OidcVerifier
from .pages import router as pages_router
from .problems import install_problem_handlers, problem_response
from .server import MAX_HEAD_BYTES
from .status import StatusCache
from .stow import MAX_REQUEST_MB, STOW_PATH
from .stow import router as stow_router

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"

#: Headers on every response: scripts, styles and images only from this origin.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class BodyLimit:
    """Refuse request heads over ``max_head`` bytes (431) and bodies over ``max_bytes``
    (``stow_bytes`` for STOW-RS requests) (413), declared or streamed, and add the
    security headers to every response.

    A streamed body is counted as it arrives; once it passes the limit the 413 is sent
    from here and the application reads a disconnect, so it stops without answering.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_head: int = MAX_HEAD_BYTES,
        stow_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_head = max_head
        self.stow_bytes = max_bytes if stow_bytes is None else stow_bytes

    def limit(self, scope: Scope) -> int:
        """The bound of this request's body: :attr:`stow_bytes` for a STOW-RS request
        (POST on :data:`~.stow.STOW_PATH`), else ``max_bytes``."""
        if scope.get("method") == "POST" and STOW_PATH.match(scope.get("path", "")):
            return self.stow_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = refused = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out already; the application's answer is dropped
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = scope.get("headers", [])
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_head:
            await _refuse(431, "request header fields too large", scope, receive, send_with_headers)
            return
        limit = self.limit(scope)
        declared = dict(headers).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(413, "request body too large", scope, receive, send_with_headers)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not started:
                    await _refuse(413, "request body too large", scope, receive, send_with_headers)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, send_with_headers)


async def _refuse(status: int, detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(status, detail, instance=scope.get("path", ""))
    await response(scope, receive, send)


def create_app(ctx: WebContext) -> FastAPI:
    """The HTTP service of one node."""
    app = FastAPI(
        title="dicom-ai-node",
        version=__version__,
        summary="Operate a DICOM AI node: studies, jobs, results, destinations, models.",
        openapi_url=None,  # served below, to authenticated callers only
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.status = StatusCache(ctx.sessions, ctx.clock)
    web = ctx.settings.web
    app.state.oidc = OidcVerifier(web, Path(ctx.settings.base_dir)) if web.oidc_issuer else None
    install_problem_handlers(app)
    registry = ctx.metrics.registry

    @app.get("/livez", include_in_schema=False)
    def livez() -> PlainTextResponse:
        """The process answers."""
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        """The index answers; 503 otherwise."""
        if index_answers(ctx.sessions):
            return PlainTextResponse("ready\n")
        return problem_response(503, "the index does not answer")

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus text exposition: from ``web.metrics_networks``, or with credentials."""
        who: Principal | None = None if metrics_allowed(request) else authenticate(request)
        if not metrics_allowed(request) and who is None:
            return problem_response(401, "authentication required")
        if who is not None and who.role is Role.SENDER:  # a sender may only store
            return problem_response(403, "the viewer role is required")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def openapi(who: Annotated[Principal, Depends(require(Role.VIEWER))]) -> JSONResponse:
        """The OpenAPI 3.1 document of this API (any role)."""
        return JSONResponse(app.openapi())

    app.include_router(api_router)
    app.include_router(actions_router)
    app.include_router(pages_router)
    app.include_router(stow_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        BodyLimit, max_bytes=web.max_body_kb * 1024, stow_bytes=MAX_REQUEST_MB * 1024 * 1024
    )
    return app
