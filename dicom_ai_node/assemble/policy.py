"""Assemble: when is a series, and when a study, complete? Pure functions of counts and ``now``."""

from __future__ import annotations

import datetime as dt

from ..domain import expected_count_reached

__all__ = ["completion_reason", "study_completion_reason"]


def completion_reason(
    *,
    now: dt.datetime,
    last_received_at: dt.datetime,
    quiet_period_s: float,
    instance_count: int,
    expected_count: int | None,
) -> str | None:
    """Why a receiving series is complete now, or ``None`` while it is not.

    Parameters
    ----------
    now:
        The current time (timezone-aware).
    last_received_at:
        When the series' newest instance was stored.
    quiet_period_s:
        Seconds without a new instance after which the series counts as complete.
    instance_count, expected_count:
        Instances stored, and how many the sender announced (NumberOfSeriesRelatedInstances,
        PS3.3 C.7.3.1), if it did.
    """
    if expected_count_reached(instance_count, expected_count):
        return f"expected instance count {expected_count} reached"
    if (now - last_received_at).total_seconds() >= quiet_period_s:
        return f"quiet for {quiet_period_s:g} s after the last instance"
    return None


def study_completion_reason(
    *,
    now: dt.datetime,
    last_received_at: dt.datetime,
    quiet_period_s: float,
    series_count: int,
    instance_count: int,
    expected_series: int | None = None,
    expected_instances: int | None = None,
) -> str | None:
    """Why a study whose received series are all complete is complete now, or ``None``.

    A study is complete when the sender's announced counts are reached
    (NumberOfStudyRelatedSeries and, if sent, NumberOfStudyRelatedInstances, PS3.3
    C.7.2.2 / PS3.4 C.3.2), or when no instance of it arrived for ``quiet_period_s``.
    A PACS forwards a study series by series, seconds apart, so a series being complete
    says nothing about the study: the rules that choose among a study's series wait for
    this.

    Parameters
    ----------
    now:
        The current time (timezone-aware).
    last_received_at:
        When the study's newest instance was stored (the node's own results, forwarded
        back by a PACS, do not count).
    quiet_period_s:
        Seconds without a new instance of the study after which it counts as complete.
    series_count, instance_count:
        Series and instances of the study received so far.
    expected_series, expected_instances:
        The counts the sender announced, if it did.
    """
    if expected_series is not None and expected_series > 0 and series_count >= expected_series:
        if expected_instances is None or instance_count >= expected_instances:
            return f"expected series count {expected_series} reached"
    elif (
        expected_instances is not None
        and expected_instances > 0
        and instance_count >= expected_instances
    ):
        return f"expected instance count {expected_instances} of the study reached"
    if (now - last_received_at).total_seconds() >= quiet_period_s:
        return f"study quiet for {quiet_period_s:g} s after its last instance"
    return None
