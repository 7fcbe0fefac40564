"""Assemble: the completion policy is a pure function of the counters and now."""

from __future__ import annotations

import datetime as dt

from dicom_ai_node.assemble.policy import completion_reason, study_completion_reason

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_quiet_period() -> None:
    kwargs = {
        "last_received_at": T0,
        "quiet_period_s": 10.0,
        "instance_count": 5,
        "expected_count": None,
    }
    assert completion_reason(now=T0 + dt.timedelta(seconds=9.9), **kwargs) is None  # type: ignore[arg-type]
    reason = completion_reason(now=T0 + dt.timedelta(seconds=10), **kwargs)  # type: ignore[arg-type]
    assert reason is not None and "quiet for 10 s" in reason


def test_expected_count_completes_at_once() -> None:
    reason = completion_reason(
        now=T0, last_received_at=T0, quiet_period_s=60, instance_count=3, expected_count=3
    )
    assert reason == "expected instance count 3 reached"
    assert (
        completion_reason(
            now=T0, last_received_at=T0, quiet_period_s=60, instance_count=2, expected_count=3
        )
        is None
    )


def test_a_study_is_complete_when_quiet_or_at_its_announced_counts() -> None:
    def reason(now_s: float, **counts: int) -> str | None:
        kwargs = {"series_count": 2, "instance_count": 120} | counts
        return study_completion_reason(
            now=T0 + dt.timedelta(seconds=now_s), last_received_at=T0, quiet_period_s=30, **kwargs
        )

    assert reason(29.9) is None
    assert reason(30.0) == "study quiet for 30 s after its last instance"
    assert reason(0, expected_series=2) == "expected series count 2 reached"
    assert reason(0, expected_series=3) is None
    assert reason(0, expected_series=2, expected_instances=121) is None
    assert reason(0, expected_instances=120) == "expected instance count 120 of the study reached"
