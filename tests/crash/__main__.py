"""``python -m tests.crash --cycles N``: a kill -9 soak of any length; exit status 0 when
every invariant held and every phase was hit."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .harness import CrashHarness, HarnessConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the cycles, print one line per cycle and the verdict."""
    parser = argparse.ArgumentParser(prog="python -m tests.crash", description=__doc__)
    parser.add_argument("--cycles", type=int, default=20, help="kill/restart cycles (20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run")
    parser.add_argument("--quiet-s", type=float, default=0.5, help="node's quiet period (0.5)")
    parser.add_argument(
        "--keep-going", action="store_true", help="go on after a cycle that broke an invariant"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dicom-ai-node-crash-"))
    print(f"seed {seed}, workdir {workdir}", flush=True)
    config = HarnessConfig(
        workdir=workdir,
        cycles=args.cycles,
        seed=seed,
        quiet_s=args.quiet_s,
        stop_on_problem=not args.keep_going,
    )
    report = CrashHarness(config).run(on_cycle=lambda c: print(c.line(), flush=True))
    print(report.summary(), flush=True)
    ok = not report.problems and not report.missed()
    if ok and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # evidence is kept only when it matters
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
