"""Send: the retry schedule (capped exponential backoff inside a window), time passed in."""

from __future__ import annotations

import datetime as dt

import pytest

from dicom_ai_node.errors import ConfigError
from dicom_ai_node.send.retry import RetryPolicy

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_delay_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_s=5.0, max_s=30.0)
    assert [policy.delay_s(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


def test_thousands_of_failures_stay_at_the_cap() -> None:
    """72 h of a dead destination at a 1 s cap is ~260 000 attempts; 2.0**1024 overflows."""
    policy = RetryPolicy(initial_s=0.5, max_s=1.0)
    assert policy.delay_s(260_000) == 1.0


def test_next_attempt_stops_at_the_deadline_then_gives_up() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=4.0)
    deadline = T0 + dt.timedelta(seconds=10)
    now, times = T0, []
    for failures in range(1, 10):
        at = policy.next_attempt(failures, now, deadline)
        if at is None:
            break
        times.append((at - T0).total_seconds())
        now = at
    assert times == [1.0, 3.0, 7.0, 10.0]  # the last attempt is at the deadline itself
    assert policy.next_attempt(5, deadline, deadline) is None


@pytest.mark.parametrize(
    ("initial", "cap", "key"), [(0.0, 1.0, "retry_initial_s"), (2.0, 1.0, "retry_max_s")]
)
def test_invalid_policy_is_refused(initial: float, cap: float, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        RetryPolicy(initial, cap)
