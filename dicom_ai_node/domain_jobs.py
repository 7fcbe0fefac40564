"""Core: a job's values: its states, what routing asks a model to run on, and the plan.

The assembler plans one job per model and subject (:class:`PlannedJob`), from what routing
wants (:class:`JobInput`) and the latest job already there (:class:`PriorJob`); each
result then goes to its destinations (:class:`DeliveryState`). Re-exported by
:mod:`dicom_ai_node.domain`, where every stage imports them from.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeliveryState", "JobInput", "JobState", "PlannedJob", "PriorJob", "Step"]


class JobState(enum.StrEnum):
    """Life of one inference job (one model on one series or study)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # results encoded and queued for delivery
    QUALITY_FAILED = "quality_failed"  # input checks failed; reason recorded, no inference
    FAILED = "failed"  # an error; reason recorded
    SUPERSEDED = "superseded"  # a later run on more instances replaced it
    CANCELLED = "cancelled"  # an operator stopped it; never claimed, its worker's write fenced

    @property
    def terminal(self) -> bool:
        """Whether the job will not change state again."""
        return self not in (JobState.QUEUED, JobState.RUNNING)


class Step(enum.StrEnum):
    """What the assembler decided for one model and subject (``assemble.revision``)."""

    NEW = "new"  # no job yet: revision 0
    KEEP = "keep"  # the latest job has this input already
    REPLACE = "replace"  # the latest job is still queued: it takes the new input
    REVISE = "revise"  # results exist: a new revision supersedes them (rerun)
    RECORD = "record"  # results exist: recorded, nothing run (record)


@dataclass(frozen=True)
class JobInput:
    """What routing wants one model to run on, for one subject.

    Attributes
    ----------
    model:
        The model's name.
    subject:
        ``study/<Study Instance UID>`` (one job per study) or ``series/<Series Instance
        UID>`` (rules that ``select: each``).
    series_instance_uids:
        The chosen series, the first one the job's series.
    input_key:
        The chosen series with their generations (``assemble.revision.input_key``).
    explanation:
        Why: the routing lines, the candidates and why the chosen one won.
    """

    model: str
    subject: str
    series_instance_uids: tuple[str, ...]
    input_key: str
    explanation: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PriorJob:
    """The latest job of one model on one subject."""

    pk: int
    revision: int
    state: JobState
    input_key: str


@dataclass(frozen=True)
class PlannedJob:
    """The decision for one model and subject, and the revision a new job gets."""

    step: Step
    input: JobInput
    prior: PriorJob | None
    revision: int
    reason: str


class DeliveryState(enum.StrEnum):
    """Life of one result object sent to one destination."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # retry window exhausted
