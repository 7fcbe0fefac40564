"""Bench: ingest throughput of the node against dcmtk's storescp, and last image to results.

One CT series (``--slices`` slices of 512x512, 16 bit, explicit VR little endian, about
0.5 MB each) is sent by dcmtk ``storescu`` over one association, alternately to a dcmtk
``storescp`` (the reference) and to the node (``dicom-ai-node serve`` with fsync on and
SQLite), in the same run, several rounds. Each round regenerates the series with new
Study/Series/SOP Instance UIDs (same pixels, same sizes), so every round goes through
the node's full path for new instances; re-sending the same UIDs would measure the
duplicate path instead. Every dcmtk process runs with ``TCP_NODELAY=1``; both receivers
accept PDUs of 128 KiB (the node's default ``dicom.max_pdu``; storescu sends no larger).
The receiver that goes first alternates between rounds, the page cache is written back
(``sync``) before each timed send, and received files are removed at the end only, so
that neither receiver pays for the other's writes. Each timed send also waits until the
node process is idle (under 2 % of a CPU over 0.5 s): after a series the node completes
it, runs the model, delivers the results and rewrites its spare files, and a storescp
send timed meanwhile would share the two CPUs and the disk with that work.

Each send is timed from storescu's start to its exit (association, every C-STORE,
release). On 2 vCPUs the ratio moves with the machine: storescp is bound by writing
the page cache, the node by fsync latency and CPU; compare ratios from the same run.

After each node round the bench waits until the SEG and the SR of that study arrive at a
second storescp acting as the PACS (listed in the node's AE table as the sender's AE
title) and prints the time from the end of ``storescu`` (last image acknowledged and
association released) to both results received, split into the configured quiet period
and the rest (completion sweep, loading, inference, encoding, delivery).

Usage::

    python bench/ingest.py [--rounds 5] [--slices 300] [--quiet-period 2] [--check]

``--check`` exits 1 when the node reaches less than 0.35x storescp's images/s
(median over rounds). Without model weights (``models/*/model.pt``) only throughput is
measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pynetdicom
from processes import dcmtk_env, free_port, stop, wait_for_port
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.series import make_ct_series, phantom_to_datasets, write_series

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.35
MAX_PDU = 131072  # the node's default dicom.max_pdu; storescp is given the same
SENDER_AE = "STORESCU"
NODE_AE = "AI_NODE"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(
    pid: int, timeout_s: float, window_s: float = 0.5, busy: float = 0.02
) -> float | None:
    """Wait until ``pid`` uses under ``busy`` of a CPU over ``window_s``; seconds waited.

    The node works in the background after a send (completion, inference, delivery,
    refilling its spare files): a send timed meanwhile would share the CPU and the disk
    with it. None when it is still busy after ``timeout_s``.
    """
    start = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - start < timeout_s:
        time.sleep(window_s)
        now = cpu_seconds(pid)
        if now - before < busy * window_s:
            return time.monotonic() - start
        before = now
    return None


class Children:
    """Child processes, each in its own process group; all stopped by :meth:`stop_all`."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


def run_in_work_folder(
    prefix: str, args: argparse.Namespace, run: Callable[[argparse.Namespace, Path, Children], int]
) -> int:
    """``run(args, work, children)`` in a new work folder; then the children are stopped and
    the folder removed, unless ``args.keep`` (``run`` sets it to keep a failure's logs)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    children = Children()
    try:
        return run(args, work, children)
    finally:
        children.stop_all()
        if args.keep:
            print(f"# work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def weights_missing() -> list[Path]:
    """Manifests under models/ whose weights file is not there (the node refuses to start);
    weights inside an installed package (``package = ...``) are the registry's to check: a
    missing package makes that model unavailable, not the node unable to start."""
    import tomllib

    missing = []
    for manifest in sorted((REPO / "models").glob("*/model.toml")):
        data = tomllib.loads(manifest.read_text("utf-8"))
        weights = data.get("weights", "")
        if not data.get("package") and not (manifest.parent / weights).is_file():
            missing.append(manifest.parent / weights)
    return missing


def node_config(
    work: Path,
    port: int,
    pacs_port: int,
    quiet_s: float,
    with_models: bool,
    rules: Path | None = None,
) -> Path:
    """A settings file: defaults except ports, paths, the quiet period and the AE table;
    with the repository's models, ``rules`` in place of their rules file when given."""
    if with_models:
        rules, models = rules or REPO / "models" / "rules.yaml", REPO / "models"
    else:  # ingest only: no model, no rule
        models = work / "no-models"
        models.mkdir(exist_ok=True)
        rules = work / "no-rules.yaml"
        rules.write_text("rules: []\n")
    text = f"""base_dir = "{work}"
[dicom]
ae_title = "{NODE_AE}"
host = "127.0.0.1"
port = {port}
max_pdu = {MAX_PDU}
[storage]
root = "{work / "storage"}"
fsync = true
[assemble]
quiet_period_s = {quiet_s}
sweep_interval_s = 0.2
[route]
rules_file = "{rules}"
[infer]
models_dir = "{models}"
[[ae_table]]
ae_title = "{SENDER_AE}"
host = "127.0.0.1"
port = {pacs_port}
"""
    path = work / "node.toml"
    path.write_text(text)
    return path


def send(folder: Path, port: int, called: str, timeout_s: float) -> float:
    """storescu every file of ``folder`` over one association; returns its wall seconds."""
    args = [
        "storescu", "-aet", SENDER_AE, "-aec", called, "+sd", "127.0.0.1", str(port), str(folder),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        args, env=dcmtk_env(), capture_output=True, timeout=timeout_s, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"storescu to {called} failed ({done.returncode}): {done.stderr[-800:]!r}"
        )
    return elapsed


@dataclass
class ResultWatch:
    """Polls the PACS folder for the SEG and SR of one study."""

    folder: Path
    study_uid: str
    seen: set[str] = field(default_factory=set)
    arrived: dict[str, float] = field(default_factory=dict)

    def poll(self) -> None:
        for path in self.folder.iterdir():
            if path.name in self.seen:
                continue
            try:
                ds = dcmread(
                    path, stop_before_pixels=True, specific_tags=["Modality", "StudyInstanceUID"]
                )
            except (InvalidDicomError, OSError, EOFError, ValueError):
                continue  # still being written: look again at the next poll
            if "StudyInstanceUID" not in ds or "Modality" not in ds:
                continue  # cut short while storescp writes it: pydicom reads what is there
            self.seen.add(path.name)
            modality = str(ds.get("Modality", ""))
            if str(ds.get("StudyInstanceUID", "")) == self.study_uid and modality in ("SEG", "SR"):
                self.arrived.setdefault(modality, time.perf_counter())

    def wait(self, timeout_s: float, interval_s: float = 0.05) -> float | None:
        """When both arrived (perf_counter seconds), or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if {"SEG", "SR"} <= set(self.arrived):
                return max(self.arrived.values())
            time.sleep(interval_s)
        return None


def make_round(phantom: ChestPhantom, seed: int, folder: Path) -> str:
    """Write the series with UIDs of its own; returns its Study Instance UID."""
    datasets = phantom_to_datasets(phantom, seed=seed)
    write_series(datasets, folder)
    return str(datasets[0].StudyInstanceUID)


def tool_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].strip() if out else "?"


def describe(args: argparse.Namespace) -> None:
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, pydicom {pydicom.__version__}, pynetdicom "
        f"{pynetdicom.__version__}, {tool_version('storescu')}"
    )
    print(
        f"# {args.rounds} rounds of {args.slices} CT slices 512x512 (16 bit, explicit VR LE), "
        f"one association per send, TCP_NODELAY=1, max PDU {MAX_PDU} on both receivers; "
        f"node: fsync on, SQLite (WAL, synchronous=FULL)"
    )
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def run(args: argparse.Namespace, work: Path, children: Children) -> int:
    for exe in ("storescp", "storescu"):
        if shutil.which(exe) is None:
            print(f"{exe} not found (Debian: apt-get install dcmtk)", file=sys.stderr)
            return 2
    missing = weights_missing()
    if missing:
        print(f"# no weights ({', '.join(str(p.relative_to(REPO)) for p in missing)}): ingest only")
    describe(args)
    ref_dir, pacs_dir, node_dir = work / "ref", work / "pacs", work / "node"
    for folder in (ref_dir, pacs_dir, node_dir):
        folder.mkdir()
    ref_port, pacs_port, node_port = free_port(), free_port(), free_port()
    storescp = ["storescp", "--max-pdu", str(MAX_PDU), "+xa"]
    ref = children.start(
        [*storescp, "-aet", "REF", "-od", str(ref_dir), str(ref_port)],
        work / "ref.log",
        dcmtk_env(),
    )
    pacs = children.start(
        [*storescp, "-aet", "PACS", "-od", str(pacs_dir), str(pacs_port)],
        work / "pacs.log",
        dcmtk_env(),
    )
    config = node_config(node_dir, node_port, pacs_port, args.quiet_period, not missing)
    node = children.start(
        [sys.executable, "-m", "dicom_ai_node.cli", "-c", str(config), "serve"], work / "node.log"
    )
    wait_for_port(ref_port, ref, 30)
    wait_for_port(pacs_port, pacs, 30)
    wait_for_port(node_port, node, 180)  # loads and warms up the models first

    phantom, _ = make_ct_series(args.slices, 512, 512, spacing_mm=(1.0, 0.7, 0.7), seed=args.seed)
    ref_rates: list[float] = []
    node_rates: list[float] = []
    latencies: list[float] = []
    wait_results = not missing
    for r in range(args.rounds):
        folder = work / f"round{r}"
        study_uid = make_round(phantom, args.seed + r, folder)
        order = [("storescp", ref_port, "REF"), ("node", node_port, NODE_AE)]
        if r % 2:  # alternate who goes first, so that a drift of the machine hits both
            order.reverse()
        rates: dict[str, float] = {}
        latency = ""
        for name, port, called in order:
            # the node finishes its work (inference, spare files) before any timed send,
            # so that neither receiver is timed while the node works in the background
            idle_wait = wait_idle(node.pid, args.idle_timeout)
            os.sync()  # nothing left to write back from the previous receiver's files
            elapsed = send(folder, port, called, args.send_timeout)
            rates[name] = args.slices / elapsed
            if name == "node" and wait_results:
                node_done = time.perf_counter()
                arrived = ResultWatch(pacs_dir, study_uid).wait(args.results_timeout)
                if arrived is None:
                    latency = (
                        f"   results: none within {args.results_timeout:g} s"
                        f" (see {work / 'node.log'})"
                    )
                    wait_results = False
                    args.keep = True  # keep the node log that explains it
                else:
                    latencies.append(arrived - node_done)
                    latency = f"   last image -> SEG+SR at PACS {latencies[-1]:.2f} s"
            if idle_wait is None:
                print(f"# node still busy after {args.idle_timeout:g} s before the {name} send")
        ref_rates.append(rates["storescp"])
        node_rates.append(rates["node"])
        line = (
            f"round {r + 1}: storescp {rates['storescp']:7.1f} images/s   "
            f"node {rates['node']:7.1f} images/s   ratio {rates['node'] / rates['storescp']:.3f}"
            + latency
        )
        print(line, flush=True)
        # files are removed at the end only: ext4 scans past recently freed inodes when it
        # creates files, which would slow down whichever receiver comes next
    return summarise(args, ref_rates, node_rates, latencies)


def summarise(
    args: argparse.Namespace,
    ref_rates: list[float],
    node_rates: list[float],
    latencies: list[float],
) -> int:
    ref, node = statistics.median(ref_rates), statistics.median(node_rates)
    ratio = node / ref
    pair = statistics.median(n / s for n, s in zip(node_rates, ref_rates, strict=True))
    print(f"median storescp {ref:.1f} images/s, node {node:.1f} images/s")
    print(
        f"ratio node/storescp {ratio:.3f} "
        f"(median of per-round ratios {pair:.3f}; target >= {TARGET_RATIO})"
    )
    if latencies:
        total = statistics.median(latencies)
        print(
            f"last image -> SEG and SR received by the PACS: median {total:.2f} s = quiet period "
            f"{args.quiet_period:g} s + processing {total - args.quiet_period:.2f} s "
            f"(sweep every 0.2 s, inference, encoding, delivery; {len(latencies)} studies)"
        )
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.check and ratio < TARGET_RATIO:
        print(f"FAIL: ratio {ratio:.3f} < {TARGET_RATIO}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds (each: one send to each receiver)"
    )
    parser.add_argument("--slices", type=int, default=300, help="slices in the series")
    parser.add_argument("--seed", type=int, default=1, help="phantom and UID seed")
    parser.add_argument(
        "--quiet-period", type=float, default=2.0, help="node's assemble.quiet_period_s"
    )
    parser.add_argument(
        "--results-timeout", type=float, default=300.0, help="longest wait for results"
    )
    parser.add_argument("--send-timeout", type=float, default=600.0, help="longest storescu run")
    parser.add_argument(
        "--idle-timeout", type=float, default=120.0, help="longest wait for the node to go idle"
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 below {TARGET_RATIO}x storescp"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, storage)")
    args = parser.parse_args(argv)
    return run_in_work_folder("dicom-ai-node-ingest-", args, run)


if __name__ == "__main__":
    sys.exit(main())
