"""Web: one study's screen: its timeline from first instance to last delivery.

Received (instances, senders) -> complete (why) -> routed (rules, the chosen series and
why, the other candidates) -> inferred (model, seconds, input checks) -> encoded
(results, each with its preview) -> delivered per destination (attempts, last status),
with the time between the steps, and the study's history (operator actions included).
Operators get the forms to re-run, cancel, re-send and force-complete.

The part that changes refreshes every 2 s until the study comes to rest (all series
complete, every job finished, every delivery delivered or failed); the fragment then
answers 286, htmx's signal to stop polling. Previews keep their place between refreshes
(``hx-preserve``), so a refresh does not draw them again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from ..domain import DeliveryState, JobState, SeriesState
from ..store import views
from ..store.views import JobDetail, StudyTimeline
from .auth import Principal, Role
from .pages_kit import ctx_of, is_uid, page_user, render

__all__ = ["STAGES", "VIEWER_PREVIEW_ALT", "at_rest", "furthest_step", "router", "timeline_stage"]

router = APIRouter()

Viewer = Annotated[Principal, Depends(page_user(Role.VIEWER))]

#: The steps of a study, in order.
STAGES = ("received", "complete", "routed", "inferred", "encoded", "delivered")
#: htmx stops polling an element whose request is answered with this status.
STOP_POLLING = 286
#: A viewer's preview ``alt`` text: the API refuses a viewer the preview of a result whose
#: source may carry burned-in patient data (Burned In Annotation YES, or absent outside
#: CT, MR, PT and NM), and the browser then shows this instead.
VIEWER_PREVIEW_ALT = "preview not shown to viewers (the source may carry burned-in patient data)"
_FAILED = (JobState.FAILED, JobState.QUALITY_FAILED)
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


def current_jobs(t: StudyTimeline) -> list[JobDetail]:
    """The jobs no later revision replaced."""
    return [j for j in t.jobs if not j.successor_pks and j.job.state != JobState.SUPERSEDED]


def furthest_step(t: StudyTimeline) -> str:
    """The furthest of :data:`STAGES` the study reached, failures or not.

    ``received`` while a series still receives, ``complete`` when none does and no job
    was made, ``routed`` while its jobs wait or run, ``inferred`` when a job is done and
    another still runs (or none made results), ``encoded`` when results wait to be
    sent, ``delivered`` when every delivery of the finished jobs' results is delivered.
    """
    if not t.series or any(s.state == SeriesState.RECEIVING for s in t.series):
        return "received"
    current = current_jobs(t)
    if not current:
        return "complete"
    done = [j for j in current if j.job.state == JobState.DONE]
    if not done:
        return "routed"
    if any(j.job.state in _UNFINISHED for j in current) or not any(j.results for j in done):
        return "inferred"
    deliveries = [d for j in done for r in j.results for d in r.deliveries]
    if deliveries and all(d.state == DeliveryState.DELIVERED for d in deliveries):
        return "delivered"
    return "encoded"


def timeline_stage(t: StudyTimeline) -> str:
    """What the study's timeline says now: :func:`furthest_step`, or ``failed`` when a
    current job or a delivery failed, or ``cancelled`` when every current job was."""
    current = current_jobs(t)
    deliveries = [d for j in current for r in j.results for d in r.deliveries]
    if any(j.job.state in _FAILED for j in current) or any(
        d.state == DeliveryState.FAILED for d in deliveries
    ):
        return "failed"
    if current and all(j.job.state == JobState.CANCELLED for j in current):
        return "cancelled"
    return furthest_step(t)


def at_rest(t: StudyTimeline) -> bool:
    """Whether nothing about the study will change without new data or an operator.

    A study without jobs is never at rest: routing may still be waiting for its quiet
    period.
    """
    if not t.jobs or any(s.state == SeriesState.RECEIVING for s in t.series):
        return False
    if any(j.job.state in _UNFINISHED for j in t.jobs):
        return False
    return not any(
        d.state == DeliveryState.PENDING for j in t.jobs for r in j.results for d in r.deliveries
    )


def _study(request: Request, who: Principal, uid: str) -> dict[str, Any] | None:
    if not is_uid(uid):
        return None
    ctx = ctx_of(request)
    found = views.study_timeline(ctx.sessions, uid, with_patient=who.role.sees_patient)
    if found is None:
        return None
    stage = timeline_stage(found)
    completed = [s.completed_at for s in found.series if s.completed_at is not None]
    return {
        "t": found,
        "uid": uid,
        "stage": stage,
        "stages": STAGES,
        "reached": STAGES.index(furthest_step(found)),
        "current": {j.job.pk for j in current_jobs(found)},
        "destinations": ctx.backend.destinations(),
        "completed_at": max(completed) if completed else None,
        "receiving": [s for s in found.series if s.state == SeriesState.RECEIVING],
        "at_rest": at_rest(found),
        "viewer_preview_alt": VIEWER_PREVIEW_ALT,
    }


@router.get("/studies/{uid}", response_class=HTMLResponse)
def study_page(request: Request, who: Viewer, uid: str) -> HTMLResponse:
    """A study's timeline, results with previews, history; the operator's forms."""
    found = _study(request, who, uid)
    if found is None:
        return render(request, "missing.html", who, status_code=404, what="study")
    return render(request, "study.html", who, refresh=not found["at_rest"], **found)


@router.get("/fragments/studies/{uid}", response_class=HTMLResponse)
def study_fragment(request: Request, who: Viewer, uid: str) -> HTMLResponse:
    """The timeline alone; 286 (stop polling) once the study is at rest."""
    found = _study(request, who, uid)
    if found is None:
        return render(request, "missing.html", who, status_code=404, what="study")
    status = STOP_POLLING if found["at_rest"] else 200
    return render(request, "_study.html", who, status_code=status, **found)
