"""Send: one sender thread per destination; a destination that hangs holds only itself."""

from __future__ import annotations

import threading

import pytest

from dicom_ai_node.send.senders import DestinationSenders


def test_a_blocked_destination_delays_no_other_and_is_not_started_twice() -> None:
    dead, live = "DEAD@127.0.0.1:1", "LIVE@127.0.0.1:2"
    release, live_served = threading.Event(), threading.Event()
    calls: list[str] = []

    def send(dest: str) -> None:
        calls.append(dest)
        if dest == dead:
            release.wait(10)  # stands for an association waiting out its timeout
        else:
            live_served.set()

    senders = DestinationSenders(send)
    try:
        assert senders.start_due([dead, live]) == [dead, live]
        assert live_served.wait(10), "the live destination waited for the dead one"
        assert dead in senders.busy()
        assert dead not in senders.start_due([dead])  # never two attempts at once
    finally:
        release.set()
        assert senders.join(10.0) == []
    assert calls.count(dead) == 1 and calls.count(live) == 1


def test_an_unexpected_error_is_logged_and_the_destination_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def send(dest: str) -> None:
        calls.append(dest)
        raise RuntimeError("database went away")

    senders = DestinationSenders(send)
    senders.start_due(["A@h:1"])
    assert senders.join(10.0) == []
    assert senders.start_due(["A@h:1"]) == ["A@h:1"]
    assert senders.join(10.0) == []
    assert calls == ["A@h:1", "A@h:1"]
    assert "delivery to A@h:1 stopped by an unexpected error" in caplog.text
