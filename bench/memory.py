"""Bench: peak memory of one job on a large CT (issue 3's memory budget), CPU.

A generated chest CT of ``--slices`` slices of 512x512 (default 1000: 16 bit, 524 MB of
pixel data) is written as files; then, in a fresh process per run, the job's work runs
as the node does it: read the files (``dcmread``), sort and check them into a volume
(``load_volume``), run the model (``ct-chest-lungs``: preprocess, predict in batches,
postprocess with its nodule splitting) and encode the SEG and SR. The bench prints each
run's peak resident memory (``ru_maxrss``) and, as references measured in the same run,
the process before it reads the series (Python, torch, the model loaded) and the size of
the series' pixel data, with the ratio of the peak to the pixel data.

Two runs: ``release`` is what the node does (``read_images`` leaves each Pixel Data in
its file; ``load_volume(release_pixels=True)`` reads one image's pixels at a time into
the float32 volume and drops them); ``keep`` reads every file whole and keeps it, as the
node did before. ``--child FOLDER --mode keep`` also runs on older code, for a before/after
(``PYTHONPATH`` at the older tree).

``--radiograph`` runs the other case of the budget instead: one generated 4000x3000 chest
radiograph (MONOCHROME1, 16 bit, 23 MiB of pixel data, a pleural effusion so that the
saliency map is made) through ``cxr-abnormal``, as the node does it.

Usage::

    python bench/memory.py [--slices 1000] [--keep-files]
    python bench/memory.py --radiograph
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "ct-chest-lungs"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(folder: Path, mode: str, model: str = MODEL) -> dict[str, float]:
    """One job's work on the files of ``folder`` in this process; memory and seconds."""
    import pydicom
    import torch

    from dicom_ai_node.encode import device_uid, encode_results
    from dicom_ai_node.infer.registry import ModelRegistry
    from dicom_ai_node.infer.runner import Device
    from dicom_ai_node.infer.volume import load_volume

    torch.set_num_threads(2)
    registry = ModelRegistry(REPO / "models", Device())
    runner = registry.runner(model)
    manifest = registry.manifests[model]
    runner.load()
    before = _peak_mb()
    t0 = time.perf_counter()
    paths = sorted(folder.glob("*.dcm"))
    if mode == "release":  # as the node reads a series since 2026-12-06
        from dicom_ai_node.infer.volume import read_images

        volume, ordered, issues = load_volume(
            read_images(paths), release_pixels=True, projection=manifest.projection
        )
    else:  # every file read whole; also runs on code from before, for a before/after
        volume, ordered, issues = load_volume([pydicom.dcmread(p) for p in paths])
    assert volume is not None and not [i for i in issues if i.blocking], issues
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    results = encode_results(
        ordered,
        output,
        manifest.algorithm(device_uid(manifest.name, manifest.version)),
        "bench/memory",
        content_datetime=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert len(results) >= 2
    return {"before_mb": before, "peak_mb": _peak_mb(), "seconds": time.perf_counter() - t0}


def write(folder: Path, slices: int) -> dict[str, float]:
    """Generate the series into ``folder``; its pixel data in MiB."""
    from dicom_ai_node.testing.series import make_ct_series, write_series

    _, datasets = make_ct_series(slices, 512, 512, spacing_mm=(1.0, 0.7, 0.7), seed=5)
    write_series(datasets, folder)
    return {"pixel_mb": sum(len(ds.PixelData) for ds in datasets) / 2**20}


def write_radiograph(folder: Path) -> dict[str, float]:
    """One 4000x3000 chest radiograph with an effusion into ``folder``; pixel data in MiB."""
    import numpy as np

    from dicom_ai_node.testing.images import radiograph_to_dataset
    from dicom_ai_node.testing.phantoms.chest_xr import ChestRadiograph, chest_radiograph
    from dicom_ai_node.testing.series import write_series

    full = chest_radiograph(4000, np.random.default_rng(5), "effusion")
    cropped = ChestRadiograph(
        image=np.ascontiguousarray(full.image[:, 500:3500]),
        finding=full.finding,
        mask=full.mask[:, 500:3500],
        cardiothoracic_ratio=full.cardiothoracic_ratio,
    )
    ds = radiograph_to_dataset(cropped, seed=5, monochrome1=True, pixel_spacing_mm=0.1)
    write_series([ds], folder)
    return {"pixel_mb": len(ds.PixelData) / 2**20}


def _run(args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, timeout=1800
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--keep-files", action="store_true", help="leave the series on disk")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="release", help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--radiograph", action="store_true", help="a 4000x3000 radiograph")
    parser.add_argument("--model", default=MODEL, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.mode, args.model)))
        return 0
    if args.write is not None:
        made = write_radiograph(args.write) if args.radiograph else write(args.write, args.slices)
        print(json.dumps(made))
        return 0
    if args.radiograph:
        return radiograph_main()

    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        t0 = time.perf_counter()
        # in a process of its own: Linux keeps a process's peak RSS across fork and exec,
        # so the runs below must not start from a parent that held the series
        pixel_mb = _run(["--write", str(folder), "--slices", str(args.slices)])["pixel_mb"]
        print(
            f"{dt.date.today()}  {platform.machine()}, {os.cpu_count()} cores; "
            f"{args.slices} slices of 512x512 written in {time.perf_counter() - t0:.0f} s; "
            f"pixel data {pixel_mb:.0f} MiB, float32 volume {pixel_mb * 2:.0f} MiB"
        )
        for mode in ("release", "keep"):
            run = _run(["--child", str(folder), "--mode", mode])
            print(
                f"{MODEL} {mode:8s} peak {run['peak_mb']:6.0f} MiB  "
                f"(before reading the series {run['before_mb']:4.0f} MiB; "
                f"+{run['peak_mb'] - run['before_mb']:5.0f} MiB = "
                f"{(run['peak_mb'] - run['before_mb']) / pixel_mb:.2f}x the pixel data)  "
                f"{run['seconds']:.1f} s"
            )
    finally:
        if args.keep_files:
            print(f"series left in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def radiograph_main() -> int:
    """The 4000x3000 radiograph case (see the module's description)."""
    model = "cxr-abnormal"
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        t0 = time.perf_counter()
        pixel_mb = _run(["--write", str(folder), "--radiograph"])["pixel_mb"]
        print(
            f"{dt.date.today()}  {platform.machine()}, {os.cpu_count()} cores; one 4000x3000 "
            f"radiograph written in {time.perf_counter() - t0:.0f} s; pixel data "
            f"{pixel_mb:.0f} MiB, float32 image {pixel_mb * 2:.0f} MiB"
        )
        run = _run(["--child", str(folder), "--mode", "release", "--model", model])
        print(
            f"{model} release peak {run['peak_mb']:6.0f} MiB  "
            f"(before reading the image {run['before_mb']:4.0f} MiB; "
            f"+{run['peak_mb'] - run['before_mb']:5.0f} MiB = "
            f"{(run['peak_mb'] - run['before_mb']) / pixel_mb:.1f}x the pixel data)  "
            f"{run['seconds']:.1f} s"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
