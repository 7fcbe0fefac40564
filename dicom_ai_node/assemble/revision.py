"""Assemble: one result set per (study, model), revised when late or better data arrives.

Routing says what each model should run on now (a :class:`JobInput`: the chosen series
and their generations); the latest job of that model on the same subject (the study, or
the series for rules that ``select: each``) says what it ran on. :func:`plan_job`
compares the two and decides, without I/O:

* no job yet: a first job (revision 0);
* the same input: nothing (a study forwarded again makes no job);
* the job is still queued: it takes the new input (nothing was made from the old one);
* results exist or are being made: ``assemble.late_instance_policy`` ``rerun`` makes a
  revision that supersedes them (its SR names the reports it replaces, PS3.3
  C.17.2.3), ``record`` only records that better data arrived;
* the job failed (an error: nothing was sent): a revision, whatever the policy.

So a (study, model) never gets two unrelated result sets.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ..domain import JobInput, JobState, PlannedJob, PriorJob, Step

__all__ = ["LatePolicy", "input_key", "plan_job"]


class LatePolicy(enum.StrEnum):
    """``assemble.late_instance_policy``: what data arriving after results does."""

    RERUN = "rerun"
    RECORD = "record"


def input_key(series: Sequence[tuple[str, int]]) -> str:
    """The input of a job as text: each chosen series with its generation, sorted.

    A series' generation grows when late instances re-open it (policy ``rerun``), so
    more instances of the chosen series change the key as a better series does.
    """
    return ",".join(f"{uid}@g{generation}" for uid, generation in sorted(series))


def plan_job(wanted: JobInput, prior: PriorJob | None, policy: LatePolicy | str) -> PlannedJob:
    """Decide what to do about one model on one subject (see the module docstring).

    Parameters
    ----------
    wanted:
        What routing chose now.
    prior:
        The latest job of the same model on the same subject, if any.
    policy:
        ``assemble.late_instance_policy``.

    Returns
    -------
    PlannedJob
        The step, and for NEW, REPLACE and REVISE the revision the job has.
    """
    policy = LatePolicy(policy)
    if prior is None:
        return PlannedJob(Step.NEW, wanted, None, 0, "first job")
    if prior.input_key == wanted.input_key:
        return PlannedJob(Step.KEEP, wanted, prior, prior.revision, "same input as before")
    if prior.state is JobState.QUEUED:
        why = f"job {prior.pk} had not started: it runs on the new input instead"
        return PlannedJob(Step.REPLACE, wanted, prior, prior.revision, why)
    if policy is LatePolicy.RERUN or prior.state is JobState.FAILED:  # FAILED: nothing sent
        why = f"revision {prior.revision + 1} supersedes job {prior.pk} ({prior.state.value})"
        return PlannedJob(Step.REVISE, wanted, prior, prior.revision + 1, why)
    why = (
        f"job {prior.pk} ({prior.state.value}) stands: assemble.late_instance_policy is "
        "record, so the new data is only recorded"
    )
    return PlannedJob(Step.RECORD, wanted, prior, prior.revision, why)
