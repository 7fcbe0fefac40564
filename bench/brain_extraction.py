"""Bench: brain extraction of a 1 mm 3-D T1 (Colin27, 181 axial slices), through the node
and as the model step alone, against deepbet's own pipeline in the same run.

The volume is Colin27's T1 (Debian ``mricron-data``: 181x217x181 at 1 mm) as an axial MR
series of 181 slices of 217x181 (``dicom_ai_node.testing.real_volumes``). Two parts:

* **Model step alone**, in this process: what the ``mr-brain-extraction`` runner does for
  a job (preprocess: orient to RAS and resample for deepbet's two networks; predict;
  postprocess: largest component, filled holes, back to the source geometry, the CSF
  label), timed per round with the weights loaded and the series already read and
  sorted (``load_volume``, not timed), as the node runs it (bf16 autocast where the CPU
  has it natively) and in float32 (``infer.bf16 = false``). Encoding the SEG and SR is
  timed apart. The reference is deepbet's own pipeline on the same volume as a NIfTI
  file (``ch2.nii.gz``): ``BrainExtraction.run``, what ``deepbet.run_bet`` calls for
  each file, given the image already read into memory and its networks loaded once, so
  that no side pays for reading files or loading weights. The three alternate in each
  round, in a rotating order, after one warm-up run each, on the same threads; the bench
  prints wall and CPU seconds (this process, all threads), the ratios of the medians and
  each mask's Dice against ``ch2bet``. On a shared VM the CPU seconds move less than the
  wall time.
* **Through the node**: ``dicom-ai-node serve`` (fsync on, SQLite) with only the
  ``mr-brain-extraction`` rule (``--all-rules``: every built-in rule, so that the
  phantom-trained ``mr-brain-atrophy`` model runs on the series too), and a dcmtk
  ``storescp`` as the PACS. Each round writes the series with new UIDs, waits until the
  node is idle, sends it with dcmtk ``storescu`` over one association (``TCP_NODELAY=1``)
  and times from the start of the send until the model's SEG and SR are at the PACS,
  split into the send, the configured quiet period and the rest (completion sweep,
  reading the series, the model, encoding, delivery), with the CPU seconds the node's
  processes used meanwhile, and the ratios of both medians to deepbet's from the first
  part of the same run.

Usage::

    python bench/brain_extraction.py [--rounds 5] [--quiet-period 2] [--threads 0]
                                     [--skip-node] [--skip-model] [--all-rules]

Needs the Debian package ``mricron-data``, the ``brain`` extra (deepbet) and, for the
node part, dcmtk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import torch
import yaml
from infer import reread
from ingest import NODE_AE, Children, node_config, run_in_work_folder, send, tool_version, wait_idle
from processes import dcmtk_env, free_port, wait_for_port
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.provenance import cpu_model
from dicom_ai_node.testing.real_volumes import (
    COLIN27_DIR,
    available,
    colin27_brain_mask,
    colin27_t1,
    dice,
    to_datasets,
)
from dicom_ai_node.testing.series import write_series

REPO = Path(__file__).resolve().parent.parent
MODEL = "mr-brain-extraction"
SERIES_DESCRIPTION = "T1 MPRAGE AX 1mm"


def series(seed: int) -> list[Dataset]:
    """Colin27's axial T1 as an MR series with UIDs made from ``seed``."""
    return to_datasets(
        colin27_t1("axial"),
        seed=seed,
        body_part_examined="BRAIN",
        series_description=SERIES_DESCRIPTION,
    )


def _stats(values: list[float]) -> str:
    return (
        f"min {min(values):6.2f} s  median {statistics.median(values):6.2f} s  "
        f"max {max(values):6.2f} s"
    )


class ModelStep:
    """The node's runner on the series (as configured, and in float32), and deepbet's
    pipeline on the NIfTI file."""

    def __init__(self, threads: int) -> None:
        import nibabel
        from deepbet.bet import BrainExtraction  # type: ignore[import-untyped]

        torch.set_num_threads(Device("cpu", threads).cpu_threads)
        registries = {
            "node": ModelRegistry(REPO / "models", Device("cpu", threads, True)),
            "node fp32": ModelRegistry(REPO / "models", Device("cpu", threads, False)),
        }
        if MODEL not in registries["node"].manifests:
            raise SystemExit(f"no model {MODEL} under {REPO / 'models'}")
        self.manifest = registries["node"].manifests[MODEL]
        # loads the weights (not timed); an unavailable model (no deepbet) raises here
        self.runners = {name: r.runner(MODEL) for name, r in registries.items()}
        datasets = [reread(ds) for ds in series(1)]
        volume, self.ordered, issues = load_volume(
            datasets,
            projection=self.manifest.projection,
            require_calibration=self.manifest.require_calibration,
            cine=self.manifest.cine,
        )
        assert volume is not None and not [i for i in issues if i.blocking], issues
        self.volume = volume
        nifti: Any = nibabel.load(COLIN27_DIR / "ch2.nii.gz")  # Nifti1Image, loosely typed
        self.nifti = nibabel.Nifti1Image(  # type: ignore[no-untyped-call]
            np.asarray(nifti.dataobj, dtype=np.float32), nifti.affine, nifti.header
        )  # read once: the timed run starts from the image in memory
        self.bet = BrainExtraction(no_gpu=True)
        ch2bet: Any = nibabel.load(COLIN27_DIR / "ch2bet.nii.gz")  # on ch2's grid
        self.reference = np.asarray(ch2bet.dataobj) > 0
        self.masks: dict[str, npt.NDArray[np.bool_]] = {}

    def bf16(self, name: str) -> bool | None:
        """Whether that runner uses bf16 autocast (None: it does not say)."""
        used = getattr(self.runners[name], "use_bf16", None)
        return None if used is None else bool(used)

    def node(self, name: str) -> tuple[float, float, float]:
        """One job's model step (preprocess, predict, postprocess): wall and CPU seconds;
        and the wall seconds of encoding its SEG and SR."""
        runner = self.runners[name]
        c0, t0 = time.process_time(), time.perf_counter()
        output = runner.postprocess(runner.predict(runner.preprocess(self.volume)), self.volume)
        c1, t1 = time.process_time(), time.perf_counter()
        results = encode_results(
            self.ordered,
            output,
            self.manifest.algorithm(device_uid(self.manifest.name, self.manifest.version)),
            f"bench/{MODEL}",
            content_datetime=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
        )
        t2 = time.perf_counter()
        assert {r.Modality for r in results} >= {"SEG", "SR"}, [r.Modality for r in results]
        assert output.label_map is not None
        self.masks[name] = np.asarray(output.label_map > 0)
        return t1 - t0, c1 - c0, t2 - t1

    def deepbet(self) -> tuple[float, float, float]:
        """deepbet's own pipeline on the image in memory (networks loaded once): wall and
        CPU seconds."""
        c0, t0 = time.process_time(), time.perf_counter()
        _, mask, _ = self.bet.run(self.nifti)
        c1, t1 = time.process_time(), time.perf_counter()
        self.masks["deepbet"] = np.asarray(mask.dataobj) > 0
        return t1 - t0, c1 - c0, 0.0

    def call(self, name: str) -> tuple[float, float, float]:
        return self.deepbet() if name == "deepbet" else self.node(name)


def run_model_step(args: argparse.Namespace) -> tuple[float, float]:
    """Time the model step; returns deepbet's median wall and CPU seconds (the reference)."""
    step = ModelStep(args.threads)
    names = ["node", "node fp32", "deepbet"]
    print(
        f"## model step alone: {MODEL} {step.manifest.version} runner (bf16 "
        f"{step.bf16('node')}; and in float32) vs deepbet {_version('deepbet')} "
        f"BrainExtraction.run (float32), {torch.get_num_threads()} torch threads, "
        "weights loaded and the series read before timing"
    )
    for name in names:  # warm-up: first-call allocations, oneDNN kernels
        step.call(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    encode_s: list[float] = []
    for r in range(args.rounds):  # order rotates, so that a drift of the machine hits all
        order = names[r % 3 :] + names[: r % 3]
        for name in order:
            elapsed, used, encode = step.call(name)
            times[name].append(elapsed)
            cpu[name].append(used)
            if name == "node":
                encode_s.append(encode)
        row = "   ".join(
            f"{name} {times[name][-1]:6.2f} s (CPU {cpu[name][-1]:5.1f} s)" for name in names
        )
        print(f"round {r + 1}: {row}   node encode SEG+SR {encode_s[-1]:.2f} s", flush=True)
    labels = {
        "node": "node runner (preprocess+predict+postprocess)",
        "node fp32": "node runner in float32",
        "deepbet": "deepbet BrainExtraction.run (reference)",
    }
    for name, label in labels.items():
        print(f"{label:<45} {_stats(times[name])}; CPU median {statistics.median(cpu[name]):.1f} s")
    print(f"{'encode SEG + SR (node)':<45} {_stats(encode_s)}")
    median = {name: statistics.median(values) for name, values in times.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    for what, m in (("wall", median), ("CPU", median_cpu)):
        print(
            f"ratio to deepbet ({what} medians): node runner {m['node'] / m['deepbet']:.2f}, "
            f"node runner float32 {m['node fp32'] / m['deepbet']:.2f}"
        )
    ch2bet = colin27_brain_mask("ch2bet", "axial")
    print(
        f"Dice vs ch2bet: node runner {dice(step.masks['node'], ch2bet):.4f}, float32 "
        f"{dice(step.masks['node fp32'], ch2bet):.4f}, deepbet "
        f"{dice(step.masks['deepbet'], step.reference):.4f}"
    )
    return median["deepbet"], median_cpu["deepbet"]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def rules_file(work: Path, all_rules: bool) -> Path:
    """The repository's rules file, or (without ``all_rules``) one with only the rules of
    the brain-extraction model."""
    rules = REPO / "models" / "rules.yaml"
    if all_rules:
        return rules
    loaded = yaml.safe_load(rules.read_text("utf-8"))
    only = [rule for rule in loaded["rules"] if rule["model"] == MODEL]
    if not only:
        raise SystemExit(f"{rules} has no rule for {MODEL}")
    path = work / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": only}, sort_keys=False))
    return path


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid`` (the
    node and any process it started), all their threads."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_results(folder: Path, study_uid: str, timeout_s: float) -> float | None:
    """perf_counter seconds when the model's SEG and SR of the study are both at the PACS
    (polled every 50 ms); None after ``timeout_s``."""
    arrived: dict[str, float] = {}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    tags = ["Modality", "StudyInstanceUID", "SeriesDescription"]
    while time.monotonic() < deadline:
        for path in folder.iterdir():
            if path.name in seen:
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True, specific_tags=tags)
            except (InvalidDicomError, OSError, EOFError, ValueError):
                continue  # still being written
            if any(t not in ds for t in tags):
                continue  # cut short while storescp writes it
            seen.add(path.name)
            if str(ds.StudyInstanceUID) == study_uid and MODEL in str(ds.SeriesDescription):
                arrived.setdefault(str(ds.Modality), time.perf_counter())
        if {"SEG", "SR"} <= set(arrived):
            return max(arrived["SEG"], arrived["SR"])
        time.sleep(0.05)
    return None


def run_node(
    args: argparse.Namespace,
    work: Path,
    children: Children,
    reference: tuple[float, float] | None,
) -> int:
    for exe in ("storescp", "storescu"):
        if shutil.which(exe) is None:
            print(f"{exe} not found (Debian: apt-get install dcmtk)", file=sys.stderr)
            return 2
    rules = "every built-in rule" if args.all_rules else f"only the {MODEL} rule"
    print(
        f"## through the node: storescu -> node ({rules}, quiet period {args.quiet_period:g} s,"
        f" fsync on, SQLite) -> storescp PACS; {tool_version('storescu')}"
    )
    pacs_dir, node_dir = work / "pacs", work / "node"
    pacs_dir.mkdir()
    node_dir.mkdir()
    pacs_port, node_port = free_port(), free_port()
    pacs = children.start(
        ["storescp", "+xa", "-aet", "PACS", "-od", str(pacs_dir), str(pacs_port)],
        work / "pacs.log",
        dcmtk_env(),
    )
    rules = rules_file(node_dir, args.all_rules)
    config = node_config(node_dir, node_port, pacs_port, args.quiet_period, True, rules)
    node = children.start(
        [sys.executable, "-m", "dicom_ai_node.cli", "-c", str(config), "serve"], work / "node.log"
    )
    wait_for_port(pacs_port, pacs, 30)
    wait_for_port(node_port, node, 300)  # loads and warms up the models first
    sends: list[float] = []
    totals: list[float] = []
    cpus: list[float] = []
    for r in range(args.rounds + 1):  # round 0: warm-up, not counted
        folder = work / f"round{r}"
        datasets = series(1000 + r)
        write_series(datasets, folder)
        if wait_idle(node.pid, args.idle_timeout) is None:
            print(f"# node still busy after {args.idle_timeout:g} s")
        cpu0, start = group_cpu_seconds(node.pid), time.perf_counter()
        send_s = send(folder, node_port, NODE_AE, args.send_timeout)
        arrived = wait_results(pacs_dir, str(datasets[0].StudyInstanceUID), args.results_timeout)
        if arrived is None:
            print(f"no results within {args.results_timeout:g} s (see {work / 'node.log'})")
            args.keep = True
            return 1
        total, cpu = arrived - start, group_cpu_seconds(node.pid) - cpu0
        label = "warm-up" if r == 0 else f"round {r}"
        print(
            f"{label}: send {send_s:5.2f} s, last image -> SEG+SR at PACS "
            f"{total - send_s:5.2f} s, total {total:6.2f} s (node CPU {cpu:5.1f} s)",
            flush=True,
        )
        if r:
            sends.append(send_s)
            totals.append(total)
            cpus.append(cpu)
        shutil.rmtree(folder)
    rest = [t - s - args.quiet_period for t, s in zip(totals, sends, strict=True)]
    print(f"send (181 images, one association):   {_stats(sends)}")
    print(f"first image sent -> SEG+SR at PACS:   {_stats(totals)}")
    print(
        f"of which after the quiet period of {args.quiet_period:g} s (sweep, load, model, "
        f"encode, delivery): {_stats(rest)}"
    )
    print(f"node CPU seconds per study (all its threads): median {statistics.median(cpus):.1f} s")
    if reference is not None:
        print(
            f"ratio to deepbet alone (medians, this run): first image sent -> results "
            f"{statistics.median(totals) / reference[0]:.2f}, node CPU per study "
            f"{statistics.median(cpus) / reference[1]:.2f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the bench; see the module's description."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each part")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument(
        "--quiet-period", type=float, default=2.0, help="node's assemble.quiet_period_s"
    )
    parser.add_argument("--all-rules", action="store_true", help="the node with every rule")
    parser.add_argument("--skip-node", action="store_true", help="only the model step")
    parser.add_argument("--skip-model", action="store_true", help="only through the node")
    parser.add_argument(
        "--results-timeout", type=float, default=300.0, help="longest wait for results"
    )
    parser.add_argument("--send-timeout", type=float, default=300.0, help="longest storescu run")
    parser.add_argument(
        "--idle-timeout", type=float, default=120.0, help="longest wait for the node to go idle"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    missing = available()
    if missing:
        print(f"missing (Debian mricron-data): {', '.join(missing)}", file=sys.stderr)
        return 2
    print(
        f"# {dt.date.today()} {platform.node()}: {os.cpu_count()} CPUs "
        f"({len(os.sched_getaffinity(0))} usable), Model name: {cpu_model()}"
    )
    print(
        f"# {platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}"
        f", pydicom {pydicom.__version__}; Colin27 T1 axial, 181 slices of 217x181, 1 mm; "
        f"{args.rounds} rounds"
    )
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    reference = None if args.skip_model else run_model_step(args)
    status = 0
    if not args.skip_node:
        status = run_in_work_folder(
            "dicom-ai-node-brain-", args, lambda a, w, c: run_node(a, w, c, reference)
        )
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return status


if __name__ == "__main__":
    sys.exit(main())
