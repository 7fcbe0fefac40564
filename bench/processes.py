"""Bench: the child processes a benchmark starts: free ports, waiting for a listener, stopping.

Imported by the scripts beside it (``python bench/<script>.py`` puts this folder first
on the module path).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

__all__ = ["dcmtk_env", "free_port", "stop", "wait_for_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait (bounded) until 127.0.0.1:port accepts connections; fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout_s} s")


def dcmtk_env() -> dict[str, str]:
    """dcmtk (Debian build) leaves Nagle's algorithm on unless told: ~40 ms per message."""
    return {**os.environ, "TCP_NODELAY": "1"}


def stop(proc: subprocess.Popen[bytes], term_wait_s: float = 20.0) -> None:
    """SIGTERM to the process's group (started with ``start_new_session``), then SIGKILL;
    each wait bounded."""
    for sig, wait_s in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
