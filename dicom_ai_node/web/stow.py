"""Web: STOW-RS ingress, ``POST /dicom-web/studies[/{study}]`` (PS3.18 10.5).

Only a caller with the ``sender`` role may store (:func:`~.auth.require_sender`; 401
without credentials, 403 for any other role, each refusal audited). The body is read as
it arrives (:mod:`.stow_multipart`), each part streamed to a temp file and checked as a
C-STORE is; the instances are stored and indexed after the closing boundary, before the
answer (:mod:`.stow_store`), and enter the same assemble and route path as C-STOREd ones.
The sender of a STOW-RS study, the calling AE title routing rules, the AE table and the
audit trail see, is the name of the token (or user) that posted it when that name is a
valid AE title, else none. The body's bound is :data:`MAX_REQUEST_MB` (the
:class:`~.app.BodyLimit` middleware allows it on these routes only), a part's
``dicom.max_instance_mb``, the parts' :attr:`~.stow_store.StowIngress.max_parts`. The
routes take ``multipart/related``, which OpenAPI 3.1 cannot describe part by part, so
they stay out of the API's OpenAPI document.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..dicomweb import DICOM_JSON
from ..store.files import valid_uid
from .auth import Principal, require_sender
from .context import ctx_of
from .stow_multipart import MalformedBody, PartStream, UnsupportedMediaType, stow_content_type
from .stow_response import Outcome, response_body, response_status
from .stow_store import StowTransaction, TooMany

__all__ = ["MAX_REQUEST_MB", "STOW_PATH", "router", "sender_ae_title"]

log = logging.getLogger(__name__)

#: Largest STOW-RS request body, in MiB (413 above, declared or streamed).
MAX_REQUEST_MB = 4096
#: The paths whose bodies may reach :data:`MAX_REQUEST_MB` (POST only).
STOW_PATH = re.compile(r"^/dicom-web/studies(/[^/]+)?$")
#: AE title characters (PS3.5 6.2, AE: default repertoire without backslash or controls).
_AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")

router = APIRouter(prefix="/dicom-web", include_in_schema=False)
Sender = Annotated[Principal, Depends(require_sender())]


def sender_ae_title(who: Principal) -> str:
    """The calling AE title a STOW-RS request's instances are recorded with: the token's
    (or user's) name when it is a valid AE title (PS3.5 6.2), else empty (no sender)."""
    name = who.name.removeprefix("token ") if who.via == "token" else who.name
    name = name.strip()
    return name if _AE_TITLE.match(name) else ""


def _answer(status: int, outcomes: Sequence[Outcome] = (), why: str = "") -> Response:
    """A DICOM JSON response; ``why`` goes in a Warning header (PS3.18 8.6.3)."""
    headers = {"Warning": f'299 - "{why}"'} if why else None
    return JSONResponse(response_body(outcomes), status, headers=headers, media_type=DICOM_JSON)


@router.post("/studies")
async def store_instances(request: Request, who: Sender) -> Response:
    """Store Instances (PS3.18 10.5): the instances of any studies."""
    return await _store(request, who, None)


@router.post("/studies/{study}")
async def store_study_instances(study: str, request: Request, who: Sender) -> Response:
    """Store Study Instances (PS3.18 10.5): those of another study fail (0xC409)."""
    if not valid_uid(study):
        return _answer(400, why="the study in the URL is not a valid UID")
    return await _store(request, who, study)


async def _store(request: Request, who: Principal, study: str | None) -> Response:
    ingress = ctx_of(request).stow
    if ingress is None:
        return _answer(503, why="STOW-RS is not served by this process")
    try:
        boundary = stow_content_type(request.headers.get("content-type", "")).boundary
    except UnsupportedMediaType as exc:
        return _answer(415, why=str(exc))
    except MalformedBody as exc:
        return _answer(400, why=str(exc))
    transaction = StowTransaction(ingress, study, sender_ae_title(who))
    stream = PartStream(boundary, transaction)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(stream.write, chunk)
        stream.close()
    except MalformedBody as exc:
        transaction.abort()
        log.warning("STOW-RS request refused: %s", exc)
        return _answer(400, why=str(exc))
    except TooMany as exc:
        transaction.abort()
        return _answer(413, why=str(exc))
    except ClientDisconnect:
        transaction.abort()
        log.warning("STOW-RS request cut short: nothing stored")
        return _answer(400, why="the request body was cut short")
    except BaseException:
        transaction.abort()  # removes temp files only: quick enough for the event loop
        raise
    outcomes = await run_in_threadpool(transaction.commit)
    status = response_status(outcomes)
    stored = sum(o.failure is None for o in outcomes)
    log.info(
        "STOW-RS request answered",
        extra={"status": status, "stored": stored, "failed": len(outcomes) - stored},
    )
    why = {202: "some instances were not stored", 409: "no instance stored"}
    return _answer(status, outcomes, why.get(status, "" if status == 200 else "nothing stored"))
