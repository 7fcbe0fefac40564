"""Web: errors as RFC 9457 problem details, in exactly one place.

Every error the service answers, from a missing route to a failed check or a crash, is
``application/problem+json`` with ``type``, ``title``, ``status`` and ``detail``; the
detail never echoes what the client sent beyond a short, escaped excerpt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import Conflict, NotFound

__all__ = [
    "PROBLEM_RESPONSES",
    "PROBLEM_TYPE",
    "Problem",
    "install_problem_handlers",
    "problem_response",
]

log = logging.getLogger(__name__)

#: The media type of problem details (RFC 9457 section 3).
PROBLEM_TYPE = "application/problem+json"


class Problem(BaseModel):
    """A problem details object (RFC 9457 section 3.1)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""


#: The errors every endpoint may answer, as the OpenAPI document lists them.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_TYPE: {"schema": Problem.model_json_schema()}},
    }
    for status in (400, 401, 403, 404, 409, 413, 422)
}


def problem_response(
    status: int,
    detail: str = "",
    *,
    instance: str = "",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem details response for ``status``; the title is the status phrase."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = Problem(title=title, status=status, detail=detail, instance=instance)
    return JSONResponse(
        body.model_dump(),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers=dict(headers) if headers else None,
    )


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)[:500]


def install_problem_handlers(app: FastAPI) -> None:
    """Turn every exception the service can meet into problem details."""

    async def http_error(request: Request, exc: Any) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else ""
        return problem_response(
            exc.status_code, detail, instance=request.url.path, headers=exc.headers
        )

    async def invalid(request: Request, exc: Any) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, _validation_detail(exc), instance=request.url.path)

    async def not_found(request: Request, exc: Any) -> JSONResponse:
        return problem_response(404, str(exc), instance=request.url.path)

    async def conflict(request: Request, exc: Any) -> JSONResponse:
        return problem_response(409, str(exc), instance=request.url.path)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return problem_response(500, "internal error", instance=request.url.path)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(Exception, crashed)
