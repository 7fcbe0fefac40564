"""Assemble: when is a series complete? Pure functions of the series' counters and ``now``."""

from __future__ import annotations

import datetime as dt

__all__ = ["completion_reason"]


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
    if expected_count is not None and expected_count > 0 and instance_count >= expected_count:
        return f"expected instance count {expected_count} reached"
    if (now - last_received_at).total_seconds() >= quiet_period_s:
        return f"quiet for {quiet_period_s:g} s after the last instance"
    return None
