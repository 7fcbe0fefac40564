"""Web: the REST API's actions under ``/api/v1``, each the screens' action of the same name.

Every action needs the operator role and calls :mod:`.operations`, which checks its
object, changes it through the store, and writes the audit record; the answers are typed
(OpenAPI) and errors are problem details.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, Field

from . import operations
from .api import Id, Operator, Uid
from .auth import client_address
from .context import EchoAnswer, ctx_of
from .problems import PROBLEM_RESPONSES

__all__ = ["ACTIONS", "router"]

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

#: The actions of the API (method, path); the screens offer the same ones (a test
#: compares this list with the screens' forms).
ACTIONS = (
    ("POST", "/api/v1/jobs/{job_id}/rerun"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("POST", "/api/v1/jobs/{job_id}/resend"),
    ("POST", "/api/v1/results/{result_id}/resend"),
    ("POST", "/api/v1/series/{series_uid}/complete"),
    ("POST", "/api/v1/studies/{study_uid}/complete"),
    ("POST", "/api/v1/failures/retry"),
    ("POST", "/api/v1/destinations/{destination}/echo"),
    ("POST", "/api/v1/destinations/{name}/pause"),
    ("POST", "/api/v1/destinations/{name}/resume"),
    ("POST", "/api/v1/models/{name}/pause"),
    ("POST", "/api/v1/models/{name}/resume"),
    ("POST", "/api/v1/studies/{study_uid}/route-explain"),
)


_ctx = ctx_of


class Destination(BaseModel):
    """A destination of results, in the form ``AE@HOST:PORT``."""

    destination: str = Field(min_length=3, max_length=300)


class Retry(BaseModel):
    """Which failures a bulk retry takes: ``jobs`` or ``deliveries``, all or one cause."""

    kind: str = Field(pattern="^(jobs|deliveries)$")
    cause: str | None = Field(default=None, max_length=2000)


class Count(BaseModel):
    """How many things an action changed."""

    count: int


class NewJob(BaseModel):
    """The job an action made."""

    job_id: int


class PreviousState(BaseModel):
    """The state a job had before the action."""

    state: str


class Explanation(BaseModel):
    """What routing would do with a stored study now."""

    text: str


class Done(BaseModel):
    """The action was carried out."""

    ok: bool = True


@router.post("/jobs/{job_id}/rerun")
def rerun(request: Request, who: Operator, job_id: Id) -> NewJob:
    """Run the job again as a new revision (its results supersede the earlier ones)."""
    return NewJob(job_id=operations.rerun_job(_ctx(request), who, client_address(request), job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, who: Operator, job_id: Id) -> PreviousState:
    """Cancel a queued or running job."""
    ctx = _ctx(request)
    return PreviousState(state=operations.cancel_job(ctx, who, client_address(request), job_id))


@router.post("/jobs/{job_id}/resend")
def resend_job(
    request: Request, who: Operator, job_id: Id, body: Annotated[Destination, Body()]
) -> Count:
    """Send every result of the job to a destination again."""
    address = client_address(request)
    ctx = _ctx(request)
    return Count(count=operations.resend_job(ctx, who, address, job_id, body.destination))


@router.post("/results/{result_id}/resend")
def resend(
    request: Request, who: Operator, result_id: Id, body: Annotated[Destination, Body()]
) -> Count:
    """Send one result to a destination again."""
    address = client_address(request)
    ctx = _ctx(request)
    return Count(count=operations.resend(ctx, who, address, result_id, body.destination))


@router.post("/series/{series_uid}/complete")
def complete_series(request: Request, who: Operator, series_uid: Uid) -> Count:
    """Mark a receiving series complete now."""
    ctx = _ctx(request)
    done = operations.force_complete_series(ctx, who, client_address(request), series_uid)
    return Count(count=len(done))


@router.post("/studies/{study_uid}/complete")
def complete_study(request: Request, who: Operator, study_uid: Uid) -> Count:
    """Mark every receiving series of a study complete now."""
    ctx = _ctx(request)
    done = operations.force_complete_study(ctx, who, client_address(request), study_uid)
    return Count(count=len(done))


@router.post("/failures/retry")
def retry(request: Request, who: Operator, body: Annotated[Retry, Body()]) -> Count:
    """Try failed jobs or deliveries again: all, or those of one cause."""
    ctx = _ctx(request)
    count = operations.retry_failures(ctx, who, client_address(request), body.kind, body.cause)
    return Count(count=count)


@router.post("/destinations/{destination:path}/echo")
def echo(
    request: Request, who: Operator, destination: Annotated[str, Path(max_length=300)]
) -> EchoAnswer:
    """C-ECHO the destination (PS3.7 9.1.5)."""
    return operations.echo(_ctx(request), who, client_address(request), destination)


def _pause_route(kind: str, pause: bool) -> Any:
    def endpoint(
        request: Request, who: Operator, name: Annotated[str, Path(max_length=300)]
    ) -> Done:
        act = operations.pause if pause else operations.resume
        act(_ctx(request), who, client_address(request), kind, name)
        return Done()

    endpoint.__doc__ = f"{'Pause' if pause else 'Resume'} a {kind}."
    return endpoint


# a destination's name may be a DICOMweb URL, slashes and all
for _kind, _segment in (("destination", "destinations/{name:path}"), ("model", "models/{name}")):
    for _pause in (True, False):
        _word = "pause" if _pause else "resume"
        router.add_api_route(
            f"/{_segment}/{_word}",
            _pause_route(_kind, _pause),
            methods=["POST"],
            name=f"{_word}_{_kind}",
            summary=f"{_word.capitalize()} a {_kind}",
        )


@router.post("/studies/{study_uid}/route-explain")
def route_explain(request: Request, who: Operator, study_uid: Uid) -> Explanation:
    """What routing would do with the stored study now (a dry run; nothing changes)."""
    return Explanation(text=operations.explain(_ctx(request), who, study_uid))
