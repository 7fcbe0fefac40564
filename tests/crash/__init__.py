"""Kill -9 harness: SIGKILL the node at random points, restart it, check the invariants.

Run from pytest (``tests/integration/test_crash.py``, 20 cycles) or as a script for
longer soaks::

    .venv/bin/python -m tests.crash --cycles 200 [--seed N] [--workdir DIR]

See ``docs/reliability.md`` for the phases and what is checked.
"""

from .harness import PHASES, CrashHarness, CycleRecord, HarnessConfig, Report

__all__ = ["PHASES", "CrashHarness", "CycleRecord", "HarnessConfig", "Report"]
