"""Web: the operator's actions, one function each, shared by the API and the screens.

Each action checks what it acts on, calls its store function (which records it in the
study's timeline), and records it in the audit trail with the user, the action and its
object, whether it was carried out or refused. The screens and the REST API call these
same functions, so an action behaves the same whichever way it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..errors import Conflict, NotFound
from ..store import actions
from .audit_log import AuditEntry, read_entries
from .auth import Principal
from .context import EchoAnswer, WebContext

__all__ = [
    "AuditEntry",
    "cancel_job",
    "echo",
    "explain",
    "force_complete_series",
    "force_complete_study",
    "pause",
    "read_audit",
    "rerun_job",
    "resend",
    "resend_job",
    "resume",
    "retry_failures",
    "rules_text",
]

T = TypeVar("T")

#: What can be paused and resumed.
PAUSE_KINDS = ("model", "destination")


def _audited(
    ctx: WebContext, who: Principal, address: str, action: str, target: str, run: Callable[[], T]
) -> T:
    """Run an action and record it (or its refusal) in the audit trail."""
    try:
        result = run()
    except (NotFound, Conflict, ValueError):
        ctx.audit.action(who.name, address, action, target, ok=False)
        raise
    ctx.audit.action(who.name, address, action, target, ok=True)
    return result


def _known_destination(ctx: WebContext, destination: str) -> str:
    if destination not in ctx.backend.destinations():
        raise NotFound(f"destination {destination!r} is not configured")
    return destination


def rerun_job(ctx: WebContext, who: Principal, address: str, job_pk: int) -> int:
    """Run a job again as a new revision; returns the new job's id."""
    return _audited(
        ctx,
        who,
        address,
        "rerun",
        f"job {job_pk}",
        lambda: actions.rerun_job(ctx.sessions, job_pk, who.name, ctx.clock()),
    )


def cancel_job(ctx: WebContext, who: Principal, address: str, job_pk: int) -> str:
    """Cancel a queued or running job; returns the state it had."""
    return _audited(
        ctx,
        who,
        address,
        "cancel",
        f"job {job_pk}",
        lambda: str(actions.cancel_job(ctx.sessions, job_pk, who.name, ctx.clock())),
    )


def _resend(
    ctx: WebContext,
    who: Principal,
    address: str,
    destination: str,
    *,
    result_pk: int | None = None,
    job_pk: int | None = None,
) -> int:
    """Send one result, or every result of a job, to a destination again."""
    what = f"result {result_pk}" if result_pk is not None else f"job {job_pk}"

    def run() -> int:
        _known_destination(ctx, destination)
        return actions.resend(
            ctx.sessions,
            destination,
            who.name,
            ctx.clock(),
            ctx.settings.send.retry_window_s,
            result_pk=result_pk,
            job_pk=job_pk,
            kinds=ctx.settings.destination(destination).results,
        )

    return _audited(ctx, who, address, "resend", f"{what} to {destination}", run)


def resend_job(ctx: WebContext, who: Principal, address: str, job_pk: int, destination: str) -> int:
    """Send every result of a job to a destination again (as :func:`resend`)."""
    return _resend(ctx, who, address, destination, job_pk=job_pk)


def resend(ctx: WebContext, who: Principal, address: str, result_pk: int, destination: str) -> int:
    """Send one result to a destination again; returns how many deliveries were queued.

    Raises
    ------
    NotFound
        When the destination is not configured, or there is no such result.
    Conflict
        When a later revision superseded the result.
    """
    return _resend(ctx, who, address, destination, result_pk=result_pk)


def force_complete_series(ctx: WebContext, who: Principal, address: str, uid: str) -> list[str]:
    """Mark a receiving series complete now; returns the series completed."""
    return _audited(
        ctx,
        who,
        address,
        "force-complete",
        f"series {uid}",
        lambda: actions.force_complete(ctx.sessions, who.name, ctx.clock(), series_uid=uid),
    )


def force_complete_study(ctx: WebContext, who: Principal, address: str, uid: str) -> list[str]:
    """Mark every receiving series of a study complete now."""
    return _audited(
        ctx,
        who,
        address,
        "force-complete",
        f"study {uid}",
        lambda: actions.force_complete(ctx.sessions, who.name, ctx.clock(), study_uid=uid),
    )


def _pausable(ctx: WebContext, kind: str, name: str) -> None:
    if kind not in PAUSE_KINDS:
        raise NotFound(f"{kind!r} cannot be paused; one of {', '.join(PAUSE_KINDS)}")
    if kind == "model" and name not in {m.name for m in ctx.backend.models()}:
        raise NotFound(f"model {name!r} is not installed")
    if kind == "destination":
        _known_destination(ctx, name)


def pause(ctx: WebContext, who: Principal, address: str, kind: str, name: str) -> None:
    """Pause a model (its jobs wait) or a destination (its deliveries wait)."""

    def run() -> None:
        _pausable(ctx, kind, name)
        actions.pause(ctx.sessions, kind, name, who.name, ctx.clock())

    _audited(ctx, who, address, "pause", f"{kind} {name}", run)


def resume(ctx: WebContext, who: Principal, address: str, kind: str, name: str) -> None:
    """Resume a paused model or destination."""

    def run() -> None:
        _pausable(ctx, kind, name)
        actions.resume(ctx.sessions, kind, name, who.name, ctx.clock())

    _audited(ctx, who, address, "resume", f"{kind} {name}", run)


#: Batches one bulk retry takes at most (each of ``store.actions.RETRY_BATCH`` rows); a
#: larger backlog is retried by pressing the button again.
RETRY_BATCHES = 20


def retry_failures(
    ctx: WebContext, who: Principal, address: str, kind: str, cause: str | None
) -> int:
    """Try failed jobs or failed deliveries again, all or those of one cause; returns how
    many, in batches (each its own transaction), at most :data:`RETRY_BATCHES` of them."""
    target = f"failed {kind}" + (f" ({cause[:80]})" if cause else "")

    def run() -> int:
        total = 0
        for _ in range(RETRY_BATCHES):
            taken = actions.retry_failed(
                ctx.sessions, kind, cause, who.name, ctx.clock(), ctx.settings.send.retry_window_s
            )
            total += taken
            if taken < actions.RETRY_BATCH:
                break
        return total

    return _audited(ctx, who, address, "retry", target, run)


def echo(ctx: WebContext, who: Principal, address: str, destination: str) -> EchoAnswer:
    """C-ECHO a configured destination (audited as a test of it).

    Raises
    ------
    Conflict
        For a DICOMweb destination: C-ECHO is a DIMSE service (PS3.7 9.1.5); its
        deliveries' outcomes are its test.
    """

    def run() -> EchoAnswer:
        _known_destination(ctx, destination)
        if ctx.settings.destination(destination).protocol != "dimse":
            raise Conflict(f"{destination} is a DICOMweb destination: C-ECHO is DIMSE only")
        return ctx.backend.echo(destination)

    return _audited(ctx, who, address, "echo", f"destination {destination}", run)


def explain(ctx: WebContext, who: Principal, study_uid: str) -> str:
    """What routing would do with a stored study now (a dry run: nothing is changed)."""
    return ctx.backend.explain(study_uid)


def read_audit(
    ctx: WebContext,
    *,
    event: str = "",
    user: str = "",
    outcome: str = "",
    since: str = "",
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest messages of the local audit log that match every filter given."""
    if ctx.audit_log is None:
        return []
    return read_entries(ctx.audit_log, event=event, user=user, outcome=outcome, since=since)[:limit]


#: The most of the rules file a screen or the API shows.
RULES_MAX_BYTES = 1024 * 1024


def rules_text(ctx: WebContext) -> tuple[str, str, str]:
    """The rules file as loaded: its path, its text (cut at :data:`RULES_MAX_BYTES`) and a
    note (why it is cut or cannot be read; empty otherwise)."""
    path = ctx.settings.path(ctx.settings.route.rules_file)
    try:
        with path.open("rb") as f:
            data = f.read(RULES_MAX_BYTES + 1)
    except OSError as exc:
        return str(path), "", f"cannot read the rules file: {exc.strerror or exc}"
    note = "" if len(data) <= RULES_MAX_BYTES else "cut: the file is larger than 1 MiB"
    return str(path), data[:RULES_MAX_BYTES].decode("utf-8", errors="replace"), note
