"""Web: the operator's actions as the screens' forms post them (``POST /ui/actions/...``).

Each form carries the session's CSRF token (field ``csrf``) and a ``back`` path; the
handler calls the same :mod:`.operations` function as the API (which checks, changes
the index and writes the audit record), then redirects (303) back with the outcome as
a flash message. An action that does not apply (unknown object, wrong state) comes back
as an error message, not an error page. Only operators and admins may act.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..errors import Conflict, NotFound
from . import operations
from .auth import Principal, Role, client_address
from .context import EchoAnswer, WebContext
from .pages_kit import (
    PATH_MAX,
    UID_MAX,
    ctx_of,
    flashed,
    is_uid,
    local_path,
    page_user,
    render,
)
from .pages_screens import rules_context

__all__ = ["UI_ACTIONS", "router"]

router = APIRouter(prefix="/actions")

Operator = Annotated[Principal, Depends(page_user(Role.OPERATOR))]
Back = Annotated[str, Form(max_length=PATH_MAX)]
Id = Annotated[int, Form(ge=1, le=2**62)]
OptionalUid = Annotated[str | None, Form(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=UID_MAX)]
Name = Annotated[str, Form(min_length=1, max_length=300)]

#: Each form's action and the API endpoint that does the same (a test compares them).
UI_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "/ui/actions/rerun": (("POST", "/api/v1/jobs/{job_id}/rerun"),),
    "/ui/actions/cancel": (("POST", "/api/v1/jobs/{job_id}/cancel"),),
    "/ui/actions/resend": (
        ("POST", "/api/v1/results/{result_id}/resend"),
        ("POST", "/api/v1/jobs/{job_id}/resend"),
    ),
    "/ui/actions/force-complete": (
        ("POST", "/api/v1/series/{series_uid}/complete"),
        ("POST", "/api/v1/studies/{study_uid}/complete"),
    ),
    "/ui/actions/retry": (("POST", "/api/v1/failures/retry"),),
    "/ui/actions/echo": (("POST", "/api/v1/destinations/{destination}/echo"),),
    "/ui/actions/pause": (
        ("POST", "/api/v1/destinations/{name}/pause"),
        ("POST", "/api/v1/models/{name}/pause"),
    ),
    "/ui/actions/resume": (
        ("POST", "/api/v1/destinations/{name}/resume"),
        ("POST", "/api/v1/models/{name}/resume"),
    ),
    "/ui/actions/explain": (("POST", "/api/v1/studies/{study_uid}/route-explain"),),
}


class _NotOk(Exception):
    """An action that ran, whose answer was not good (a C-ECHO that failed)."""


def _outcome(who: Principal, back: str, default: str, act: Callable[[], str]) -> Response:
    """Run ``act`` and go back to the page with what it says, or why it was not done."""
    try:
        text, ok = act(), True
    except NotFound as exc:
        text, ok = f"Not found: {exc}", False
    except Conflict as exc:
        text, ok = f"Not done: {exc}", False
    except ValueError as exc:
        text, ok = f"Not done: {exc}", False
    except _NotOk as exc:
        text, ok = str(exc), False
    return RedirectResponse(flashed(local_path(back, default), who, text, ok=ok), status_code=303)


def _study_page(uid: str) -> str:
    return f"/ui/studies/{uid}"


#: A job's actions: the operation and what its answer says (``{job}``, ``{answer}``).
_JOB_ACTIONS: dict[str, tuple[Callable[[WebContext, Principal, str, int], object], str]] = {
    "rerun": (operations.rerun_job, "Job {job} is run again as job {answer}."),
    "cancel": (operations.cancel_job, "Job {job} is cancelled (it was {answer})."),
}


def _job_action(request: Request, who: Principal, action: str, job: int, back: str) -> Response:
    """Run one of :data:`_JOB_ACTIONS` on a job and go back with what it says."""
    ctx, address = ctx_of(request), client_address(request)
    run, says = _JOB_ACTIONS[action]

    def act() -> str:
        return says.format(job=job, answer=run(ctx, who, address, job))

    return _outcome(who, back, "/ui/studies", act)


@router.post("/rerun")
def rerun(request: Request, who: Operator, job: Id, back: Back = "") -> Response:
    """Run a job again as a new revision."""
    return _job_action(request, who, "rerun", job, back)


@router.post("/cancel")
def cancel(request: Request, who: Operator, job: Id, back: Back = "") -> Response:
    """Cancel a queued or running job."""
    return _job_action(request, who, "cancel", job, back)


@router.post("/resend")
def resend(
    request: Request,
    who: Operator,
    destination: Name,
    result: Annotated[int | None, Form(ge=1, le=2**62)] = None,
    job: Annotated[int | None, Form(ge=1, le=2**62)] = None,
    back: Back = "",
) -> Response:
    """Send a result (or every result of a job) to a destination again."""
    ctx, address = ctx_of(request), client_address(request)

    def act() -> str:
        if result is not None:
            count = operations.resend(ctx, who, address, result, destination)
            what = f"result {result}"
        elif job is not None:
            count = operations.resend_job(ctx, who, address, job, destination)
            what = f"the results of job {job}"
        else:
            raise ValueError("name a result or a job to send again")
        return f"Sending {what} to {destination} again ({count} queued)."

    return _outcome(who, back, "/ui/destinations", act)


@router.post("/force-complete")
def force_complete(
    request: Request,
    who: Operator,
    series: OptionalUid = None,
    study: OptionalUid = None,
    back: Back = "",
) -> Response:
    """Mark a receiving series, or every receiving series of a study, complete now."""
    ctx, address = ctx_of(request), client_address(request)

    def act() -> str:
        if series:
            done = operations.force_complete_series(ctx, who, address, series)
        elif study:
            done = operations.force_complete_study(ctx, who, address, study)
        else:
            raise ValueError("name a series or a study to complete")
        return f"{len(done)} series marked complete."

    return _outcome(who, back, _study_page(study) if study else "/ui/studies", act)


def _pause_or_resume(
    request: Request, who: Principal, kind: str, name: str, back: str, pause: bool
) -> Response:
    ctx, address = ctx_of(request), client_address(request)
    verb = "paused" if pause else "resumed"

    def act() -> str:
        (operations.pause if pause else operations.resume)(ctx, who, address, kind, name)
        return f"The {kind} {name} is {verb}."

    return _outcome(who, back, "/ui/rules" if kind == "model" else "/ui/destinations", act)


@router.post("/pause")
def pause(request: Request, who: Operator, kind: Name, name: Name, back: Back = "") -> Response:
    """Pause a model (its jobs wait) or a destination (nothing is sent to it)."""
    return _pause_or_resume(request, who, kind, name, back, True)


@router.post("/resume")
def resume(request: Request, who: Operator, kind: Name, name: Name, back: Back = "") -> Response:
    """Resume a paused model or destination."""
    return _pause_or_resume(request, who, kind, name, back, False)


@router.post("/retry")
def retry(
    request: Request,
    who: Operator,
    kind: Annotated[str, Form(pattern="^(jobs|deliveries|all)$")],
    group: Annotated[str, Form(max_length=1)] = "",
    cause: Annotated[str, Form(max_length=4000)] = "",
    back: Back = "",
) -> Response:
    """Retry failed jobs or deliveries: one cause (``group`` set), or all of them.

    ``cause`` may be empty (a failure without a reason is a cause of its own), so the
    form says with ``group`` whether it names one.
    """
    ctx, address = ctx_of(request), client_address(request)
    kinds = ("jobs", "deliveries") if kind == "all" else (kind,)

    def act() -> str:
        counts = [
            operations.retry_failures(ctx, who, address, k, cause if group else None) for k in kinds
        ]
        done = ", ".join(f"{n} {k}" for n, k in zip(counts, kinds, strict=True))
        return f"Retrying {done}."

    return _outcome(who, back, "/ui/failures", act)


def echo_text(destination: str, answer: EchoAnswer) -> str:
    """What a C-ECHO answered, in words."""
    status = f"status 0x{answer.status:04X}" if answer.status is not None else "no status"
    word = "succeeded" if answer.ok else "failed"
    return f"C-ECHO to {destination} {word} ({status}, {answer.seconds:.2f} s): {answer.message}"


@router.post("/echo")
def echo(request: Request, who: Operator, destination: Name, back: Back = "") -> Response:
    """C-ECHO a configured destination and show its answer."""
    ctx, address = ctx_of(request), client_address(request)

    def act() -> str:
        answer = operations.echo(ctx, who, address, destination)
        if not answer.ok:
            raise _NotOk(echo_text(destination, answer))
        return echo_text(destination, answer)

    return _outcome(who, back, "/ui/destinations", act)


@router.post("/explain", response_class=HTMLResponse)
def explain(
    request: Request, who: Operator, study: Annotated[str, Form(max_length=PATH_MAX)]
) -> Response:
    """Route a stored study as a dry run and show what routing says (nothing changes).

    A text that is not a UID (digits and dots, at most 64 characters, as the API takes
    it) is answered 400 with the form and a message, without routing anything.
    """
    context = rules_context(request)
    uid = study.strip()
    context["study_uid"] = uid
    context["back"] = "/ui/rules"
    if not is_uid(uid):
        context["explain_error"] = (
            f"Not a Study Instance UID: digits and dots, at most {UID_MAX} characters."
        )
        return render(request, "rules.html", who, status_code=400, **context)
    context["explanation"] = operations.explain(ctx_of(request), who, uid)
    return render(request, "rules.html", who, **context)
