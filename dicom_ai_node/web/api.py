"""Web: the REST API under ``/api/v1``: every screen's data (the actions: api_actions.py).

Lists are paginated with an opaque cursor (``next_cursor``); errors are problem details
(RFC 9457, :mod:`.problems`); every endpoint is typed, so the OpenAPI 3.1 document at
``/api/v1/openapi.json`` describes exactly what it answers. Patient fields are filled only
for roles that may see them. The actions call :mod:`.operations`, as the screens do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from ..store import overview, peers, timeline, views
from ..store.views import BadCursor, Page
from . import operations
from .auth import Principal, Role, require
from .context import ModelInfo, ctx_of
from .preview_files import preview_png
from .problems import PROBLEM_RESPONSES
from .status import status_of

__all__ = ["Admin", "Cursor", "Date", "Id", "Limit", "Operator", "Text", "Uid", "Viewer", "router"]

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]

#: A DICOM UID in a path (PS3.5 9.1: digits and dots, at most 64 characters).
Uid = Annotated[str, Path(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]
#: A primary key in a path.
Id = Annotated[int, Path(ge=1, le=2**62)]
#: Filters: short, printable.
Text = Annotated[str | None, Query(max_length=64)]
Date = Annotated[str | None, Query(pattern=r"^[0-9]{8}$")]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=64)]

_ctx = ctx_of


def _bad_cursor(exc: ValueError) -> HTTPException:
    return HTTPException(400, str(exc) if not isinstance(exc, BadCursor) else "invalid cursor")


class Listener(BaseModel):
    """The DICOM listener: our AE title, where it listens, its TLS port when on."""

    ae_title: str
    host: str
    port: int
    tls_port: int | None = None


class Sender(BaseModel):
    """An entry of the AE table (the allow-list when ``accept_only_known_callers``)."""

    ae_title: str
    host: str
    port: int
    allow_list: bool


class RulesFile(BaseModel):
    """The rules file as loaded: where it is, its text (at most 1 MiB) and a note."""

    path: str
    text: str
    note: str


# -- reads ------------------------------------------------------------------------------


@router.get("/status")
def status(request: Request, who: Viewer) -> overview.StatusSummary:
    """Queue depth and oldest waiting job per model, deliveries pending, last received
    (read at most once a second for all callers)."""
    return status_of(request)


@router.get("/listener")
def listener(request: Request, who: Viewer) -> Listener:
    """The DICOM listener: AE title, address and ports."""
    return Listener.model_validate(_ctx(request).backend.listener())


@router.get("/models")
def models(request: Request, who: Viewer) -> list[ModelInfo]:
    """The installed models: version, device, loaded; one that cannot run here (its
    package missing) with ``available`` false and the reason."""
    return _ctx(request).backend.models()


@router.get("/studies")
def studies(
    request: Request,
    who: Viewer,
    date_from: Date = None,
    date_to: Date = None,
    model: Text = None,
    state: Text = None,
    calling_ae: Text = None,
    accession: Text = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[views.StudySummary]:
    """Studies, newest first; patient fields only for operators and admins."""
    try:
        return views.list_studies(
            _ctx(request).sessions,
            date_from=date_from,
            date_to=date_to,
            model=model,
            state=state,
            calling_ae=calling_ae,
            accession=accession,
            limit=limit,
            cursor=cursor,
            with_patient=who.role.sees_patient,
        )
    except ValueError as exc:
        raise _bad_cursor(exc) from exc


@router.get("/studies/{study_uid}")
def study(request: Request, who: Viewer, study_uid: Uid) -> timeline.StudyTimeline:
    """A study's timeline: received, complete, routed, inferred, encoded, delivered."""
    found = timeline.study_timeline(
        _ctx(request).sessions, study_uid, with_patient=who.role.sees_patient
    )
    if found is None:
        raise HTTPException(404, "no such study")
    return found


@router.get("/jobs")
def jobs(
    request: Request,
    who: Viewer,
    state: Text = None,
    model: Text = None,
    calling_ae: Text = None,
    accession: Text = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[views.JobSummary]:
    """Jobs, newest first."""
    try:
        return views.list_jobs(
            _ctx(request).sessions,
            state=state,
            model=model,
            calling_ae=calling_ae,
            accession=accession,
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:
        raise _bad_cursor(exc) from exc


@router.get("/jobs/{job_id}")
def job(request: Request, who: Viewer, job_id: Id) -> timeline.JobDetail:
    """One job: its input, routing explanation, results and deliveries."""
    found = timeline.job_detail(_ctx(request).sessions, job_id)
    if found is None:
        raise HTTPException(404, "no such job")
    return found


@router.get(
    "/results/{result_id}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def preview(request: Request, who: Viewer, result_id: Id) -> Response:
    """A picture of a result: the key slice with outlines and measurements."""
    png = preview_png(_ctx(request), result_id, viewer=not who.role.sees_patient)
    return Response(png, media_type="image/png")


@router.get("/failures")
def failures(request: Request, who: Viewer, limit: Limit = 200) -> list[overview.FailureGroup]:
    """Failed jobs and deliveries, grouped by cause: the ``limit`` largest groups."""
    return overview.failures_by_cause(_ctx(request).sessions, limit)


@router.get("/destinations")
def destinations(request: Request, who: Viewer) -> list[peers.DestinationSummary]:
    """Every destination: outbox counts, last attempt, paused or not."""
    ctx = _ctx(request)
    return peers.destinations(ctx.sessions, ctx.clock(), ctx.backend.destinations())


@router.get("/destinations/{destination:path}")  # a DICOMweb URL has slashes
def destination(
    request: Request, who: Viewer, destination: Annotated[str, Path(max_length=300)]
) -> peers.DestinationDetail:
    """One destination's outbox and recent attempts."""
    ctx = _ctx(request)
    found = peers.destination_detail(
        ctx.sessions, destination, ctx.clock(), configured=ctx.backend.destinations()
    )
    if found is None:
        raise HTTPException(404, "no such destination")
    return found


@router.get("/rules")
def rules(request: Request, who: Viewer) -> RulesFile:
    """The rules file as loaded."""
    path, text, note = operations.rules_text(_ctx(request))
    return RulesFile(path=path, text=text, note=note)


@router.get("/associations")
def associations(
    request: Request,
    who: Viewer,
    calling_ae: Text = None,
    outcome: Text = None,
    limit: Limit = 100,
) -> list[peers.AssociationRow]:
    """Recent associations: calling AE, address, instances, outcome, and why refused."""
    return peers.recent_associations(
        _ctx(request).sessions, limit, calling_ae=calling_ae, outcome=outcome
    )


@router.get("/senders")
def senders(request: Request, who: Viewer) -> list[Sender]:
    """The AE table (the allow-list when ``dicom.accept_only_known_callers`` is on)."""
    settings = _ctx(request).settings
    only = settings.dicom.accept_only_known_callers
    return [
        Sender(ae_title=e.ae_title, host=e.host, port=e.port, allow_list=only)
        for e in settings.ae_table
    ]


@router.get("/audit")
def audit(
    request: Request,
    who: Admin,
    event: Text = None,
    user: Text = None,
    outcome: Text = None,
    since: Text = None,
    limit: Limit = 100,
) -> list[operations.AuditEntry]:
    """The audit trail (admins only), newest first, filtered."""
    return operations.read_audit(
        _ctx(request),
        event=event or "",
        user=user or "",
        outcome=outcome or "",
        since=since or "",
        limit=limit,
    )
