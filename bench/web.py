"""Bench: the operator's window under load: the job list over HTTP, and ingest beside it.

Acceptance 5 of issue 16, two parts, each with its reference measured in the same run.

``list``: an index of ``--jobs`` jobs (100,000 by default) is seeded in SQLite by
:func:`web_list.seed_jobs` (the node's migrations, then bulk inserts in the proportions
of a busy node), a viewer token is made with ``dicom-ai-node tokens add``, and
``dicom-ai-node serve`` starts on it (web service on a free port of 127.0.0.1, no
models). One keep-alive HTTP client then asks ``GET /api/v1/jobs`` ``--requests`` times
per case: the first page (limit 50), ``state=failed``, one model (a common one and the
rarest), one calling AE (the PACS that forwards most studies, a modality, the rarest
sender), one accession (a different study each time), the page after the first page's
cursor, and a page deep in the list. The cases take turns request by request, so a
drift of the machine hits them alike. Two references are timed in the same turns:
``GET /livez`` (the HTTP round trip alone) and the bare store call
(``store.views.list_jobs`` for the first page, in this process, on the same file).
``GET /api/v1/status`` is timed too, for information. It prints p50, p95 and max per
case and each p95 over each reference's p95, and exits 1 when a job list case's p95 is
300 ms or more.

``ingest``: two nodes on copies of one seeded index, one with ``[web] enabled = false``
(A) and one with it on (B), no models (ingest only). Each round sends the same CT
series (``bench/ingest.py``'s generator, new UIDs each round) with dcmtk ``storescu``
over one association to A and to B, the one that goes first alternating (AB, BA, ...).
While B receives, a client does what an open operator screen does: every second it
asks for the job list (first page) and for ``/api/v1/status``, starting at a random
phase. Before each timed send the last receiver's quiet period is over, both nodes are
idle and the page cache is written back. It prints images/s for each send, the CPU the
node used per image, and the ratio B/A; the target is a ratio of 0.95 or more
(``--check`` exits 1 below it). ``--control`` runs the same with the web service off
in both nodes and no polling: the spread of the harness itself. ``--poll PATH`` (again
for more) replaces what is polled, ``--poll-interval 0`` polls nothing: the web
service's cost split into its parts.

The seeded index's pending deliveries go to hosts that do not exist here: they are
made due in a year, so that no node spends the run failing them (they stay pending and
are counted by the status read). The seeding's ANALYZE statistics are dropped: a node
never makes them, and with them SQLite scans the whole series table for the completion
sweep's ``WHERE state = ?`` (every seeded series is routed), 25 ms five times a second.

Usage::

    python bench/web.py [--jobs 100000] list [--requests 300]
    python bench/web.py [--jobs 100000] ingest [--rounds 6] [--slices 600] [--check]
    python bench/web.py ingest --control
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ingest import (
    Children,
    cpu_seconds,
    make_round,
    node_config,
    run_in_work_folder,
    send,
    wait_idle,
)
from processes import free_port, wait_for_port
from web_list import LIMIT_MS, seed_jobs

from dicom_ai_node.store.db import Database
from dicom_ai_node.store.views import list_jobs
from dicom_ai_node.testing.series import make_ct_series

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.95
#: The nodes' quiet period: a series is completed (and its files' spares refilled) this
#: long after its last instance, so a send is followed by work a little later.
QUIET_S = 2.0
#: What an open status or jobs screen asks for each time it refreshes.
POLLED = ("/api/v1/jobs?limit=50", "/api/v1/status")
NODE_AE = "AI_NODE"


# ---------------------------------------------------------------- nodes


def seed(work: Path, jobs: int) -> tuple[Path, dict[str, Any]]:
    """A seeded index (SQLite file) of ``jobs`` jobs; its pending deliveries due in a year."""
    path = work / "seed.db"
    start = time.perf_counter()
    seeded = seed_jobs(f"sqlite:///{path}", jobs)
    db = Database(f"sqlite:///{path}")
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE delivery SET next_attempt_at = ?, deadline_at = ? WHERE state = 'pending'",
                (dt.datetime(2027, 12, 1), dt.datetime(2027, 12, 2)),
            )
            # the node never runs ANALYZE: statistics of this uniform history (every
            # series routed) would steer its sweep queries off their indexes
            conn.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")
    finally:
        db.dispose()
    print(f"# seeded {jobs} jobs in {time.perf_counter() - start:.1f} s: {seeded['counts']}")
    return path, seeded


@dataclass
class Node:
    """One ``dicom-ai-node serve`` on a copy of the seeded index, in ``folder``."""

    name: str
    folder: Path
    web: bool
    dicom_port: int = 0
    web_port: int = 0
    config: Path = field(default_factory=Path)
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def prepare(self, index: Path) -> None:
        self.folder.mkdir(parents=True)
        self.dicom_port, self.web_port = free_port(), free_port()
        # ingest only (no models, no rules); results would go to an unused port
        self.config = node_config(self.folder, self.dicom_port, free_port(), QUIET_S, False)
        with self.config.open("a") as out:
            out.write(
                f'[web]\nenabled = {str(self.web).lower()}\nhost = "127.0.0.1"\n'
                f"port = {self.web_port}\n"
            )
        shutil.copyfile(index, self.folder / "node.db")  # <storage root>/../node.db
        if self.web:
            self.token = make_token(self.config)

    def start(self, children: Children, timeout_s: float = 180.0) -> None:
        args = [sys.executable, "-m", "dicom_ai_node.cli", "-c", str(self.config), "serve"]
        self.proc = children.start(args, self.folder / "node.log")
        wait_for_port(self.dicom_port, self.proc, timeout_s)
        if self.web:
            wait_for_port(self.web_port, self.proc, timeout_s)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


def make_token(config: Path) -> str:
    """A viewer token from ``dicom-ai-node tokens add`` (its text is the last line printed)."""
    args = [sys.executable, "-m", "dicom_ai_node.cli", "-c", str(config)]
    done = subprocess.run(
        [*args, "tokens", "add", "bench", "--role", "viewer"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"tokens add failed ({done.returncode}): {done.stderr[-800:]}")
    return done.stdout.strip().splitlines()[-1].strip()


def client(node: Node) -> httpx.Client:
    """A keep-alive client with the node's bearer token."""
    return httpx.Client(
        base_url=node.url, headers={"Authorization": f"Bearer {node.token}"}, timeout=30.0
    )


def describe() -> None:
    model = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs ({model}), {platform.platform()}, "
        f"Python {platform.python_version()}, httpx {httpx.__version__}"
    )
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


# ---------------------------------------------------------------- job list


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)]


def get_json(
    http: httpx.Client, path: str, params: dict[str, Any] | None = None
) -> Callable[[], Any]:
    """A call that GETs ``path`` and returns its JSON (raises on an error status)."""

    def call() -> Any:
        answer = http.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    return call


def list_cases(
    http: httpx.Client, seeded: dict[str, Any], jobs: int
) -> dict[str, Callable[[], Any]]:
    """The job list requests to time, by name; each checks its answer."""
    accessions = seeded["accessions"]
    turn = iter(range(10**9))

    def get(params: dict[str, Any]) -> Callable[[], Any]:
        return get_json(http, "/api/v1/jobs", params)

    first = get({"limit": 50})()
    cursor = first["next_cursor"]
    if len(first["items"]) != 50 or not cursor:
        raise RuntimeError(f"first page: {len(first['items'])} items, next_cursor {cursor!r}")
    middle = cursor_near(get, jobs // 2)

    def by_accession() -> Any:
        params = {"accession": accessions[next(turn) % len(accessions)], "limit": 50}
        return get(params)()

    return {
        "first page (limit 50)": get({"limit": 50}),
        "state=failed": get({"state": "failed", "limit": 50}),
        f"model={seeded['model']}": get({"model": seeded["model"], "limit": 50}),
        f"model={seeded['rare_model']} (rare)": get({"model": seeded["rare_model"], "limit": 50}),
        f"calling_ae={seeded['forwarder']} (60 % of studies)": get(
            {"calling_ae": seeded["forwarder"], "limit": 50}
        ),
        f"calling_ae={seeded['calling_ae']}": get(
            {"calling_ae": seeded["calling_ae"], "limit": 50}
        ),
        f"calling_ae={seeded['rare_ae']} (rare)": get(
            {"calling_ae": seeded["rare_ae"], "limit": 50}
        ),
        "accession=<one study>": by_accession,
        "page after the first page's cursor": get({"cursor": cursor, "limit": 50}),
        "page at the middle (cursor)": get({"cursor": middle, "limit": 50}),
    }


def cursor_near(get: Callable[[dict[str, Any]], Callable[[], Any]], pk: int) -> str:
    """The cursor of the first page of 500 that reaches down to job ``pk`` (walked to)."""
    params: dict[str, Any] = {"limit": 500}
    for _ in range(1000):
        page = get(params)()
        if page["items"][-1]["pk"] <= pk or not page["next_cursor"]:
            return str(page["next_cursor"])
        params = {"limit": 500, "cursor": page["next_cursor"]}
    raise RuntimeError(f"job {pk} not reached in 1000 pages")


def time_turns(calls: dict[str, Callable[[], Any]], requests: int) -> dict[str, list[float]]:
    """Each call ``requests`` times (after one not counted), taking turns; sorted ms."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(requests):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: sorted(ms) for name, ms in times.items()}


def run_list(args: argparse.Namespace, work: Path, children: Children) -> int:
    describe()
    index, seeded = seed(work, args.jobs)
    node = Node("list", work / "node", web=True)
    node.prepare(index)
    node.start(children)
    db = Database(f"sqlite:///{node.folder / 'node.db'}")
    sessions = db.session
    with client(node) as http:
        livez = http.get("/livez")
        livez.raise_for_status()
        references: dict[str, Callable[[], Any]] = {
            "GET /livez": lambda: http.get("/livez").raise_for_status(),
            "store call (in process)": lambda: list_jobs(sessions, limit=50),
        }
        cases = list_cases(http, seeded, args.jobs)
        info = {"GET /api/v1/status (information)": get_json(http, "/api/v1/status")}
        times = time_turns({**references, **cases, **info}, args.requests)
    db.dispose()
    refs = {name: percentile(times[name], 95) for name in references}
    print(
        f"# {args.requests} requests per case over one keep-alive connection, cases in turns; "
        f"{args.jobs} jobs; ms"
    )
    print(f"{'case':42} {'p50':>7} {'p95':>7} {'max':>7} {'/livez':>7} {'/store':>7}")
    slow = []
    for name, ms in times.items():
        p95 = percentile(ms, 95)
        ratios = f"{p95 / refs['GET /livez']:7.1f} {p95 / refs['store call (in process)']:7.1f}"
        print(f"{name:42} {percentile(ms, 50):7.2f} {p95:7.2f} {ms[-1]:7.2f} {ratios}")
        if name in cases and p95 >= LIMIT_MS:
            slow.append(name)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if slow:
        print(f"FAIL: p95 at or over {LIMIT_MS:.0f} ms: {', '.join(slow)}", file=sys.stderr)
        return 1
    print(f"every job list case under {LIMIT_MS:.0f} ms at p95")
    return 0


# ---------------------------------------------------------------- ingest A/B


class Poller:
    """What an open operator screen does: the job list and the status, every ``interval_s``."""

    def __init__(self, node: Node, interval_s: float, paths: list[str]) -> None:
        self.node, self.interval_s, self.paths = node, interval_s, paths
        self.ms: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def _run(self) -> None:
        # the screen's refresh has no relation to the send: start at a random phase
        self._stop.wait(random.uniform(0, self.interval_s))
        with client(self.node) as http:
            while not self._stop.is_set():
                tick = time.monotonic()
                for path in self.paths:
                    start = time.perf_counter()
                    try:
                        http.get(path).raise_for_status()
                    except httpx.HTTPError as exc:
                        self.errors.append(f"{path}: {exc}")
                    self.ms.append((time.perf_counter() - start) * 1000)
                self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - tick)))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass
class Send:
    name: str
    images_s: float
    cpu_ms_per_image: float
    polls: int = 0
    poll_p95_ms: float = 0.0


def timed_send(node: Node, folder: Path, args: argparse.Namespace) -> Send:
    """One storescu send to ``node`` (polled while it runs when its web service is on)."""
    before = cpu_seconds(node.pid)
    timeout_s, paths = args.send_timeout, args.poll or list(POLLED)
    if node.web and args.poll_interval > 0:
        with Poller(node, args.poll_interval, paths) as poller:
            elapsed = send(folder, node.dicom_port, NODE_AE, timeout_s)
        if poller.errors:
            raise RuntimeError(f"polling failed: {poller.errors[:3]}")
        polls = len(poller.ms) // len(paths)
        p95 = percentile(sorted(poller.ms), 95) if poller.ms else 0.0
    else:
        elapsed = send(folder, node.dicom_port, NODE_AE, timeout_s)
        polls, p95 = 0, 0.0
    cpu = cpu_seconds(node.pid) - before
    return Send(node.name, args.slices / elapsed, 1000 * cpu / args.slices, polls, p95)


def run_ingest(args: argparse.Namespace, work: Path, children: Children) -> int:
    if shutil.which("storescu") is None:
        print("storescu not found (Debian: apt-get install dcmtk)", file=sys.stderr)
        return 2
    describe()
    index, _ = seed(work, args.jobs)
    a, b = Node("A", work / "a", web=False), Node("B", work / "b", web=not args.control)
    for node in (a, b):
        node.prepare(index)
        node.start(children)
    polled = ", ".join(args.poll or POLLED)
    label = {
        "A": "web off",
        "B": "web off (control)"
        if args.control
        else f"web on, polled every {args.poll_interval:g} s: {polled}"
        if args.poll_interval > 0
        else "web on, not polled",
    }
    print(
        f"# {args.rounds} rounds of {args.slices} CT slices 512x512 to A ({label['A']}) and "
        f"B ({label['B']}), first receiver alternating; storescu, one association, "
        f"TCP_NODELAY=1; nodes: fsync on, SQLite, no models"
    )
    phantom, _ = make_ct_series(args.slices, 512, 512, spacing_mm=(1.0, 0.7, 0.7), seed=1)
    sends: dict[str, list[Send]] = {"A": [], "B": []}
    last_send = 0.0
    for r in range(args.rounds):
        folder = work / f"round{r}"
        make_round(phantom, 1 + r, folder)
        line = []
        for node in (a, b) if r % 2 == 0 else (b, a):
            # the last receiver completes its series after the quiet period: idle until then
            time.sleep(max(0.0, last_send + QUIET_S + 1.0 - time.monotonic()))
            for other in (a, b):
                if wait_idle(other.pid, args.idle_timeout) is None:
                    print(f"# node {other.name} still busy after {args.idle_timeout:g} s")
            os.sync()
            done = timed_send(node, folder, args)
            last_send = time.monotonic()
            sends[done.name].append(done)
            polled = f" ({done.polls} polls, p95 {done.poll_p95_ms:.0f} ms)" if done.polls else ""
            line.append(
                f"{done.name} {done.images_s:6.1f} images/s {done.cpu_ms_per_image:5.2f} "
                f"CPU ms/image{polled}"
            )
        ratio = sends["B"][-1].images_s / sends["A"][-1].images_s
        print(f"round {r + 1}: " + "   ".join(line) + f"   B/A {ratio:.3f}", flush=True)
    return summarise(args, sends)


def summarise(args: argparse.Namespace, sends: dict[str, list[Send]]) -> int:
    rate = {k: statistics.median(s.images_s for s in v) for k, v in sends.items()}
    cpu = {k: statistics.median(s.cpu_ms_per_image for s in v) for k, v in sends.items()}
    pairs = [b.images_s / a.images_s for a, b in zip(sends["A"], sends["B"], strict=True)]
    ratio = rate["B"] / rate["A"]
    print(
        f"median A {rate['A']:.1f} images/s ({cpu['A']:.2f} CPU ms/image), "
        f"B {rate['B']:.1f} images/s ({cpu['B']:.2f} CPU ms/image)"
    )
    print(
        f"ratio B/A {ratio:.3f} (per round {', '.join(f'{p:.3f}' for p in pairs)}, "
        f"median {statistics.median(pairs):.3f}; target >= {TARGET_RATIO}); "
        f"CPU per image B/A {cpu['B'] / cpu['A']:.3f}"
    )
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.check and ratio < TARGET_RATIO:
        print(f"FAIL: ratio {ratio:.3f} < {TARGET_RATIO}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs seeded in the index")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, index)")
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("list", help="job list over HTTP, p95 per case")
    p.add_argument("--requests", type=int, default=300, help="requests per case")
    p.set_defaults(run=run_list)
    p = sub.add_parser("ingest", help="ingest with and without the web service")
    p.add_argument("--rounds", type=int, default=6, help="rounds (each: one send to A and B)")
    p.add_argument("--slices", type=int, default=600, help="slices in the series")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls")
    p.add_argument("--poll", action="append", help=f"path to poll (default: {', '.join(POLLED)})")
    p.add_argument("--send-timeout", type=float, default=300.0, help="longest storescu run")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="longest wait for idle")
    p.add_argument("--control", action="store_true", help="web off in both nodes, no polling")
    p.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET_RATIO}")
    p.set_defaults(run=run_ingest)
    args = parser.parse_args(argv)
    result: int = run_in_work_folder("dicom-ai-node-web-", args, args.run)
    return result


if __name__ == "__main__":
    sys.exit(main())
