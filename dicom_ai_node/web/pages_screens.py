"""Web: the operator's screens that read: status, studies, failures, destinations, rules,
associations, audit trail.

Each screen reads through the same store functions as the API (:mod:`.api`); the parts
that change are also served alone as ``/ui/fragments/...`` for htmx to refresh. Patient
names, IDs and birth dates are read only for roles that may see them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from ..domain import JobState
from ..store import overview, pauses, peers, views
from . import operations
from .auth import Principal, Role
from .pages_kit import ctx_of, page_user, render
from .pages_study import router as study_router
from .status import status_of

__all__ = ["router"]

router = APIRouter()
router.include_router(study_router)

Viewer = Annotated[Principal, Depends(page_user(Role.VIEWER))]
Admin = Annotated[Principal, Depends(page_user(Role.ADMIN))]
Text = Annotated[str, Query(max_length=64)]

#: Rows of the studies list per page.
STUDIES_PER_PAGE = 50


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """Free disk where instances are stored, against ``storage.min_free_mb``."""

    free: int
    total: int
    reserve: int

    @property
    def low(self) -> bool:
        """Whether less than the reserve is free (new instances are refused)."""
        return self.free < self.reserve


def _disk(request: Request) -> Disk | None:
    ctx = ctx_of(request)
    root = ctx.storage_root or ctx.settings.path(ctx.settings.storage.root)
    reserve = ctx.settings.storage.min_free_mb * 1024 * 1024
    for folder in (root, *root.parents):
        try:
            usage = shutil.disk_usage(folder)
        except OSError:
            continue
        return Disk(usage.free, usage.total, reserve)
    return None


def _status(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    summary = status_of(request)
    configured = ctx.backend.destinations()
    outbox = {o.destination: o for o in summary.outbox}
    return {
        "listener": ctx.backend.listener(),
        "models": ctx.backend.models(),
        "queues": {q.model_name: q for q in summary.models},
        "summary": summary,
        "disk": _disk(request),
        "outbox": outbox,
        "destinations": sorted(set(configured) | set(outbox)),
    }


@router.get("/", response_class=HTMLResponse)
def status_page(request: Request, who: Viewer) -> HTMLResponse:
    """Listener, models, queues, disk, last instance received, outbox per destination."""
    return render(request, "status.html", who, refresh=True, **_status(request))


@router.get("/fragments/status", response_class=HTMLResponse)
def status_fragment(request: Request, who: Viewer) -> HTMLResponse:
    """The part of the status screen that changes."""
    return render(request, "_status.html", who, **_status(request))


# -- studies ------------------------------------------------------------------------------


def _date(value: str) -> str:
    """``YYYY-MM-DD`` (a date input) or ``YYYYMMDD`` as ``YYYYMMDD``."""
    return value.strip().replace("-", "")


def _studies(
    request: Request, who: Principal, filters: dict[str, str], cursor: str
) -> dict[str, Any]:
    ctx = ctx_of(request)
    error, page = "", None
    try:
        page = views.list_studies(
            ctx.sessions,
            date_from=_date(filters["date_from"]) or None,
            date_to=_date(filters["date_to"]) or None,
            model=filters["model"] or None,
            state=filters["state"] or None,
            calling_ae=filters["calling_ae"] or None,
            accession=filters["accession"] or None,
            limit=STUDIES_PER_PAGE,
            cursor=cursor or None,
            with_patient=who.role.sees_patient,
        )
    except views.BadCursor:
        error = "That page link is no longer valid; start from the first page."
    except ValueError as exc:
        error = str(exc)
    query = {k: v for k, v in filters.items() if v}
    next_link = ""
    if page is not None and page.next_cursor:
        next_link = "/ui/studies?" + urlencode({**query, "cursor": page.next_cursor})
    return {
        "filters": filters,
        "query": urlencode(query),
        "cursor": cursor,
        "studies": page.items if page is not None else (),
        "next_link": next_link,
        "error": error,
        "model_names": sorted({m.name for m in ctx.backend.models()}),
        "states": [s.value for s in JobState],
    }


def _filters(
    date_from: Text = "",
    date_to: Text = "",
    model: Text = "",
    state: Text = "",
    calling_ae: Text = "",
    accession: Text = "",
) -> dict[str, str]:
    """The studies search fields of the query string, by name (a FastAPI dependency the
    page and its fragment share)."""
    return {
        "date_from": date_from,
        "date_to": date_to,
        "model": model,
        "state": state,
        "calling_ae": calling_ae,
        "accession": accession,
    }


Filters = Annotated[dict[str, str], Depends(_filters)]


@router.get("/studies", response_class=HTMLResponse)
def studies_page(
    request: Request, who: Viewer, filters: Filters, cursor: Text = ""
) -> HTMLResponse:
    """Studies, newest first, searchable; patient columns for operators and admins."""
    found = _studies(request, who, filters, cursor)
    status = 400 if found["error"] else 200
    return render(request, "studies.html", who, status_code=status, refresh=not cursor, **found)


@router.get("/fragments/studies", response_class=HTMLResponse)
def studies_fragment(request: Request, who: Viewer, filters: Filters) -> HTMLResponse:
    """The first page of the studies list alone."""
    return render(request, "_studies.html", who, **_studies(request, who, filters, ""))


# -- failures -----------------------------------------------------------------------------


def _failures(request: Request) -> dict[str, Any]:
    return {"groups": overview.failures_by_cause(ctx_of(request).sessions)}


@router.get("/failures", response_class=HTMLResponse)
def failures_page(request: Request, who: Viewer) -> HTMLResponse:
    """Failed jobs and deliveries grouped by cause, each group with a retry button."""
    return render(request, "failures.html", who, refresh=True, **_failures(request))


@router.get("/fragments/failures", response_class=HTMLResponse)
def failures_fragment(request: Request, who: Viewer) -> HTMLResponse:
    """The failure groups alone."""
    return render(request, "_failures.html", who, **_failures(request))


# -- destinations -------------------------------------------------------------------------


def _destinations(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    configured = ctx.backend.destinations()
    found = peers.destinations(ctx.sessions, ctx.clock(), configured)
    return {"destinations": found, "configured": set(configured)}


@router.get("/destinations", response_class=HTMLResponse)
def destinations_page(request: Request, who: Viewer) -> HTMLResponse:
    """Every destination: outbox counts, last attempt, paused; echo, pause and resume."""
    return render(request, "destinations.html", who, refresh=True, **_destinations(request))


@router.get("/fragments/destinations", response_class=HTMLResponse)
def destinations_fragment(request: Request, who: Viewer) -> HTMLResponse:
    """The destinations table alone."""
    return render(request, "_destinations.html", who, **_destinations(request))


def _destination(request: Request, name: str) -> dict[str, Any] | None:
    ctx = ctx_of(request)
    configured = ctx.backend.destinations()
    detail = peers.destination_detail(ctx.sessions, name, ctx.clock(), configured=configured)
    if detail is None:
        return None
    return {"name": name, "detail": detail, "configured": name in configured}


@router.get("/destinations/{name:path}", response_class=HTMLResponse)
def destination_page(request: Request, who: Viewer, name: str) -> HTMLResponse:
    """One destination: its outbox, its latest attempts; echo, pause and resume."""
    found = _destination(request, name[:300])
    if found is None:
        return render(request, "missing.html", who, status_code=404, what="destination")
    return render(request, "destination.html", who, refresh=True, **found)


@router.get("/fragments/destinations/{name:path}", response_class=HTMLResponse)
def destination_fragment(request: Request, who: Viewer, name: str) -> HTMLResponse:
    """One destination's outbox and attempts alone."""
    found = _destination(request, name[:300])
    if found is None:
        return render(request, "missing.html", who, status_code=404, what="destination")
    return render(request, "_destination.html", who, **found)


# -- rules and models ---------------------------------------------------------------------


def rules_context(request: Request) -> dict[str, Any]:
    """What the rules screen shows (the explain action renders it too)."""
    ctx = ctx_of(request)
    path, text, note = operations.rules_text(ctx)
    summary = status_of(request)
    return {
        "rules_file": path,
        "rules_text": text,
        "rules_note": note,
        "models": ctx.backend.models(),
        "queues": {q.model_name: q for q in summary.models},
        "paused": pauses.paused(ctx.sessions, "model"),
        "study_uid": "",
        "explanation": None,
        "explain_error": "",
    }


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, who: Viewer) -> HTMLResponse:
    """The rules file as loaded, the models with pause and resume, a routing dry run."""
    return render(request, "rules.html", who, **rules_context(request))


# -- associations -------------------------------------------------------------------------


def _associations(request: Request, calling_ae: str, outcome: str) -> dict[str, Any]:
    ctx = ctx_of(request)
    rows = peers.recent_associations(
        ctx.sessions, 100, calling_ae=calling_ae or None, outcome=outcome or None
    )
    return {
        "associations": rows,
        "ae_table": ctx.settings.ae_table,
        "only_known": ctx.settings.dicom.accept_only_known_callers,
        "filters": {"calling_ae": calling_ae, "outcome": outcome},
        "query": urlencode(
            {k: v for k, v in (("calling_ae", calling_ae), ("outcome", outcome)) if v}
        ),
    }


@router.get("/associations", response_class=HTMLResponse)
def associations_page(
    request: Request, who: Viewer, calling_ae: Text = "", outcome: Text = ""
) -> HTMLResponse:
    """Recent associations (who, from where, what came of it) and the allow-list."""
    found = _associations(request, calling_ae, outcome)
    return render(request, "associations.html", who, refresh=True, **found)


@router.get("/fragments/associations", response_class=HTMLResponse)
def associations_fragment(
    request: Request, who: Viewer, calling_ae: Text = "", outcome: Text = ""
) -> HTMLResponse:
    """The associations table alone."""
    found = _associations(request, calling_ae, outcome)
    return render(request, "_associations.html", who, **found)


# -- audit --------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    who: Admin,
    event: Text = "",
    user: Text = "",
    outcome: Text = "",
    since: Text = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> HTMLResponse:
    """The audit trail (admins only), newest first, filtered."""
    entries = operations.read_audit(
        ctx_of(request), event=event, user=user, outcome=outcome, since=since, limit=limit
    )
    filters = {"event": event, "user": user, "outcome": outcome, "since": since}
    return render(request, "audit.html", who, entries=entries, filters=filters, limit=limit)
