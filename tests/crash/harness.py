"""Kill -9 harness: SIGKILL the node at random points of a study's path, restart, check.

One node (``dicom-ai-node serve``, a subprocess in its own process group, SQLite, fsync
on, spare files on) keeps one storage root and database for the whole run. Its very
first start, on an empty database, is killed while it creates its schema. Then each
cycle sends a new study (a generated chest CT, 24 slices) through
:class:`~.peers.HoldingProxy`, kills the node with SIGKILL at a random point of the
cycle's target phase, restarts it on the same storage, re-sends what was not answered
Success (as a real sender would), waits (bounded) until the study is terminal and then
checks every invariant over every study sent so far
(:func:`~.checks.check_invariants`).

Phases, chosen round-robin, each at a random point inside it:

``receive``
    after a random number k (1..n-1) of instances were answered Success, plus 0-20 ms,
    while the sender keeps streaming;
``commit-response``
    the proxy holds back the node's bytes from a random instance on; the node is killed
    as soon as that instance's row is committed, so it was stored and indexed but the
    sender never saw the Success (a lost response);
``assembly``
    0-80 % of the quiet period after the last Success (series still receiving);
``inference``
    0-80 % of the shortest job seen so far after the job turned ``running``, or (every
    other time, at random) as soon as its first result file is on disk, before the job
    and its outbox rows are committed;
``sending``
    the destination sleeps in each C-STORE; 0-180 % of that sleep after the first result
    of the study arrived there;
``startup``
    a kill at one of the points above, then the restart itself is killed 0-100 % of the
    shortest start seen into its start-up (recovery, migrations, model loading).

Where a kill really landed is read from the database afterwards
(:func:`~.checks.landed_phase`); a phase that no cycle hit gets extra cycles.
"""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from dicom_ai_node.testing.series import make_ct_series, phi_canaries_in

from ..conftest import NodeProcess, free_port, write_node_config
from .checks import (
    NodeView,
    SentStudy,
    check_invariants,
    landed_phase,
    leftovers,
    rerun_differences,
    study_terminal,
    unrecorded_results,
)
from .peers import HoldingProxy, RecordingPacs, Sender, dataset_bytes

__all__ = ["PHASES", "CrashHarness", "CycleRecord", "HarnessConfig", "Report"]

PHASES = ("receive", "commit-response", "assembly", "inference", "sending", "startup")
#: Points a ``startup`` cycle kills at first, before it kills the restart.
_FIRST_KILLS = ("receive", "assembly", "inference", "sending")
CALLING_AE = "CRASHSCU"
#: Longest wait for any one event the harness kills on (a phase that never comes).
EVENT_TIMEOUT_S = 60.0
#: How often the harness looks at the database or the disk while it waits.
POLL_S = 0.002
_RECOVERED = re.compile(r"recovered after restart: (\d+) temp file\(s\) removed, (\d+) job")


@dataclass(frozen=True)
class HarnessConfig:
    """One run of the harness."""

    workdir: Path
    cycles: int = 20
    seed: int = 0
    slices: int = 24  # the model takes 20 or more
    matrix: int = 128  # the model's own input size
    quiet_s: float = 0.5
    send_delay_s: float = 0.5
    terminal_timeout_s: float = 120.0
    #: Stop at the first cycle that breaks an invariant (keeps its evidence on disk).
    stop_on_problem: bool = True


@dataclass(frozen=True)
class CycleRecord:
    """What one cycle did and found."""

    index: int
    target: str
    landed: str
    detail: str
    left: str  # what the kill left on disk for the restart to deal with
    resent: int
    seconds: float
    problems: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for the log of a run."""
        verdict = "ok" if not self.problems else f"{len(self.problems)} problem(s)"
        return (
            f"cycle {self.index:3d} target {self.target:15s} landed {self.landed:15s} "
            f"{self.detail}; left {self.left}; resent {self.resent}; {self.seconds:.1f} s; "
            f"{verdict}"
        )


@dataclass
class Report:
    """The outcome of a run."""

    seed: int
    first_start: str = ""
    cycles: list[CycleRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    receipts: int = 0
    redelivered: int = 0
    #: From the node's "recovered after restart" lines: temp files removed, jobs re-queued.
    temp_removed: int = 0
    requeued: int = 0
    seconds: float = 0.0

    def landed(self) -> set[str]:
        """The phases some kill landed in."""
        return {c.landed for c in self.cycles}

    def missed(self) -> list[str]:
        """Phases no kill landed in."""
        return [p for p in PHASES if p not in self.landed()]

    def summary(self) -> str:
        """The verdict in a few lines."""
        counts = {p: sum(c.landed == p for c in self.cycles) for p in (*PHASES, "after")}
        spread = ", ".join(f"{p} {n}" for p, n in counts.items() if n)
        lines = [
            f"seed {self.seed}: first start {self.first_start}",
            f"{len(self.cycles)} cycles in {self.seconds:.0f} s (kills landed: {spread}); "
            f"{self.receipts} results received, {self.redelivered} of them re-deliveries "
            "of a UID received before",
            f"start-up recovery: {self.temp_removed} temp file(s) removed, "
            f"{self.requeued} running job(s) re-queued",
            f"{len(self.problems)} problem(s); phases missed: {', '.join(self.missed()) or 'none'}",
        ]
        return "\n".join(lines + [f"  {p}" for p in self.problems[:50]])


class CrashHarness:
    """Runs the cycles against one node, its destination and a relay for the sender."""

    def __init__(self, config: HarnessConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        config.workdir.mkdir(parents=True, exist_ok=True)
        self.view = NodeView(config.workdir / "node.db", config.workdir / "storage")
        self.pacs = RecordingPacs(CALLING_AE)
        self.port = free_port()
        self.node_config = Path()
        self.node: NodeProcess | None = None
        self.proxy: HoldingProxy | None = None
        self.studies: list[SentStudy] = []
        self.job_seconds: list[float] = []
        self.start_seconds: list[float] = []

    # -- the node --------------------------------------------------------------------------
    def _new_node(self) -> NodeProcess:
        if self.node is not None:
            self.node.kill()  # never two at once
        count = len(list(self.config.workdir.glob("node-*.log")))
        self.node = NodeProcess(
            self.node_config, self.port, self.config.workdir / f"node-{count:03d}.log"
        )
        return self.node

    def _start_node(self) -> None:
        started = time.monotonic()
        self._new_node().start(90.0)
        self.start_seconds.append(time.monotonic() - started)

    def _kill_node(self) -> None:
        assert self.node is not None
        self.node.kill()

    def _start_killed(self, trigger: Callable[[], None]) -> bool:
        """Start the node and kill it when ``trigger`` returns; whether it died starting."""
        node = self._new_node()

        def kill() -> None:
            with contextlib.suppress(TimeoutError):  # killed all the same
                trigger()
            # on a loaded machine the trigger can fire before start() has spawned the
            # process (its condition was met, or its wait ran out): wait for it, bounded
            deadline = time.monotonic() + EVENT_TIMEOUT_S
            while node.proc is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if node.proc is not None:
                node.kill()

        killer = threading.Thread(target=kill, name="killer", daemon=True)
        killer.start()
        with contextlib.suppress(RuntimeError):  # "exited before listening": killed first
            node.start(EVENT_TIMEOUT_S)
        killer.join(EVENT_TIMEOUT_S + 30.0)
        node.kill()
        return "node started" not in node.log()

    def _first_start(self) -> str:
        """The first start, on an empty database, killed while it creates the schema."""
        delay = self.rng.uniform(0.0, 0.04)

        def trigger() -> None:
            self._wait(self.view.db_path.exists, "database file")
            time.sleep(delay)

        early = self._start_killed(trigger)
        tables = len(self.view.rows("SELECT name FROM sqlite_master WHERE type = 'table'"))
        self._start_node()
        when = "while starting" if early else "after it started"
        return f"killed {delay * 1000:.0f} ms after its database appeared ({when}, {tables} tables)"

    # -- one run ----------------------------------------------------------------------------
    def run(self, on_cycle: Callable[[CycleRecord], None] = lambda _c: None) -> Report:
        """Run the cycles (plus extra ones for phases no kill landed in); always cleans up."""
        report = Report(self.config.seed)
        started = time.monotonic()
        pacs_port = free_port()
        self.node_config = write_node_config(
            self.config.workdir,
            f"sqlite:///{self.view.db_path}",
            self.port,
            [(CALLING_AE, pacs_port)],
            quiet_s=self.config.quiet_s,
        )
        self.pacs.start(pacs_port)
        try:
            report.first_start = self._first_start()
            self.proxy = HoldingProxy(self.port)
            self._run_cycles(report, on_cycle)
            if self.node is not None:
                self.node.stop()  # a clean stop too: SIGTERM, then the logs are read
            report.problems += self._log_problems(report)
            report.problems += self._operator_view()
        except (RuntimeError, TimeoutError) as exc:  # the node did not come back
            report.problems.append(f"run stopped: {exc}")
        finally:
            if self.node is not None:
                self.node.stop()
            if self.proxy is not None:
                self.proxy.close()
            self.pacs.stop()
        receipts = self.pacs.received()
        report.receipts = len(receipts)
        report.redelivered = len(receipts) - len({r.sop_instance_uid for r in receipts})
        report.seconds = time.monotonic() - started
        return report

    def _run_cycles(self, report: Report, on_cycle: Callable[[CycleRecord], None]) -> None:
        plan = [PHASES[i % len(PHASES)] for i in range(self.config.cycles)]
        extra = 2 * len(PHASES)  # bounded: at most two more tries per phase
        while plan:
            record = self._cycle(len(report.cycles), plan.pop(0))
            report.cycles.append(record)
            report.problems += [f"cycle {record.index}: {p}" for p in record.problems]
            on_cycle(record)
            if report.problems and self.config.stop_on_problem:
                return
            missed = report.missed()
            if not plan and extra > 0 and missed:
                plan, extra = missed[:extra], extra - len(missed)

    def _log_problems(self, report: Report) -> list[str]:
        """Patient data in any node log; counts the start-up recoveries on the way."""
        out = []
        for log in sorted(self.config.workdir.glob("node-*.log")):
            text = log.read_text(errors="replace")
            found = phi_canaries_in(text)
            if found:
                out.append(f"patient data ({', '.join(found)}) in {log.name}")
            for temp, jobs in _RECOVERED.findall(text):
                report.temp_removed += int(temp)
                report.requeued += int(jobs)
        return out

    def _operator_view(self) -> list[str]:
        """``dicom-ai-node jobs`` names every study, and nothing is left pending there."""
        shown = subprocess.run(
            [
                *(sys.executable, "-m", "dicom_ai_node.cli", "-c", str(self.node_config)),
                *("jobs", "--limit", str(len(self.studies) + 1)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        out = [f"jobs report: exit {shown.returncode}"] if shown.returncode else []
        out += [
            f"jobs report: study {s.study_instance_uid} missing"
            for s in self.studies
            if s.study_instance_uid not in shown.stdout
        ]
        for left in (": pending", ": queued", ": running", "), receiving", "), complete"):
            if left in shown.stdout:
                out.append(f"jobs report: something is still {left[2:]}")
        return out

    # -- one cycle --------------------------------------------------------------------------
    def _new_study(self, index: int) -> tuple[SentStudy, list[Dataset]]:
        cfg = self.config
        _, datasets = make_ct_series(
            cfg.slices, cfg.matrix, cfg.matrix, (2.5, 2.8, 2.8), seed=cfg.seed * 10_000 + index
        )
        study = SentStudy(
            str(datasets[0].StudyInstanceUID),
            str(datasets[0].SeriesInstanceUID),
            {str(ds.SOPInstanceUID): dataset_bytes(ds) for ds in datasets},
        )
        return study, list(datasets)

    def _cycle(self, index: int, target: str) -> CycleRecord:
        started = time.monotonic()
        assert self.proxy is not None
        study, datasets = self._new_study(index)
        self.studies.append(study)
        point = self.rng.choice(_FIRST_KILLS) if target == "startup" else target
        hold_at = self.rng.randrange(len(datasets)) if point == "commit-response" else -1

        def before_each(i: int) -> None:
            if i == hold_at:
                assert self.proxy is not None
                self.proxy.hold.set()

        self.pacs.entered.clear()
        self.pacs.delay_s = self.config.send_delay_s if point == "sending" else 0.0
        sender = Sender(self.proxy.port, datasets, CALLING_AE, before_each)
        sender.start()
        problems: list[str] = []
        try:
            detail = self._kill_in(point, study, sender, hold_at)
        except TimeoutError as exc:
            problems.append(f"{point}: {exc}")
            detail = "timed out"
        self._kill_node()
        self.pacs.delay_s = 0.0
        sender.unblock()
        sender.join(2 * EVENT_TIMEOUT_S)
        self.proxy.cut()
        acked = sender.acked_now()
        landed = landed_phase(self.view, study, acked)
        left = leftovers(self.view)
        cut_short = unrecorded_results(self.view)
        if target == "startup":
            delay = self.rng.uniform(0.0, min(self.start_seconds))
            early = self._start_killed(lambda: time.sleep(delay))
            detail = f"{point} {detail}, then the restart {delay * 1000:.0f} ms in"
            landed = "startup" if early else "after"
        self._start_node()
        missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in acked]
        problems += self._resend(missing)
        problems += self._wait_terminal(study)
        if not problems:
            problems += check_invariants(self.view, self.studies, self.pacs.received())
            problems += rerun_differences(self.view, cut_short)
        self.job_seconds += [j[5] for j in self.view.jobs(study.study_instance_uid) if j[5]]
        seconds = time.monotonic() - started
        return CycleRecord(
            index, target, landed, detail, left, len(missing), seconds, tuple(problems)
        )

    def _kill_in(self, point: str, study: SentStudy, sender: Sender, hold_at: int) -> str:
        """Wait for the point's phase, then for a random delay in it; returns what was done."""
        n = len(study.data)
        rng = self.rng
        if point == "receive":
            k = rng.randint(1, n - 1)
            if not sender.wait_acked(k, EVENT_TIMEOUT_S):
                raise TimeoutError(f"fewer than {k} instances acknowledged")
            delay = rng.uniform(0.0, 0.02)
            time.sleep(delay)
            return f"after {k} of {n} acknowledged + {delay * 1000:.0f} ms"
        if point == "commit-response":
            uid = list(study.data)[hold_at]
            self._wait(lambda: uid in self.view.indexed_uids(study.study_instance_uid), "commit")
            return f"instance {hold_at + 1} of {n} committed, its response held back"
        if not sender.finished.wait(EVENT_TIMEOUT_S) or len(sender.acked_now()) != n:
            raise TimeoutError("the study was not acknowledged whole")
        if point == "assembly":
            delay = rng.uniform(0.0, 0.8 * self.config.quiet_s)
        elif point == "inference" and rng.random() < 0.5:
            results = self.view.storage / "results" / study.study_instance_uid
            self._wait(lambda: any(results.rglob("*.dcm")), "result file")
            return "a result file written, the job not yet recorded"
        elif point == "inference":
            self._wait(
                lambda: any(j[1] == "running" for j in self.view.jobs(study.study_instance_uid)),
                "running job",
            )
            delay = rng.uniform(0.0, 0.8 * min(self.job_seconds, default=1.0))
        else:
            if not self.pacs.entered.wait(EVENT_TIMEOUT_S):
                raise TimeoutError("no result reached the destination")
            delay = rng.uniform(0.0, 1.8 * self.config.send_delay_s)
        time.sleep(delay)
        return f"{delay * 1000:.0f} ms in"

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(POLL_S)
        raise TimeoutError(f"no {what} within {EVENT_TIMEOUT_S:.0f} s")

    def _resend(self, datasets: list[Dataset]) -> list[str]:
        """Send again what was not answered Success (bounded tries), as a sender would."""
        assert self.proxy is not None
        left = list(datasets)
        for _try in range(3):
            if not left:
                return []
            sender = Sender(self.proxy.port, left, CALLING_AE)
            sender.start()
            sender.join(2 * EVENT_TIMEOUT_S)
            acked = sender.acked_now()
            left = [ds for ds in left if str(ds.SOPInstanceUID) not in acked]
        return [f"{len(left)} instance(s) not accepted after the restart"] if left else []

    def _wait_terminal(self, study: SentStudy) -> list[str]:
        deadline = time.monotonic() + self.config.terminal_timeout_s
        while time.monotonic() < deadline:
            if study_terminal(self.view, study):
                return []
            time.sleep(0.1)
        uid = study.study_instance_uid
        return [
            f"study {uid} not terminal after {self.config.terminal_timeout_s:.0f} s: "
            f"series {self.view.series(uid)}, jobs {self.view.jobs(uid)}, "
            f"deliveries {self.view.deliveries(uid)}"
        ]
