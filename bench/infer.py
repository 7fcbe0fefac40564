"""Bench: seconds per study for each built-in model (inference plus encoding), CPU.

For every model under ``models/`` the bench generates a study its declared input
accepts and times, per round, what a job does between reading the series and storing
its results: sorting and checking the volume (``load_volume``), the runner's
preprocess, predict and postprocess, and encoding the SEG and SR (``encode_results``).
Files and the network are left out (``bench/ingest.py`` measures those). The datasets
are read back from their encoded bytes first, so they look like files read from disk.

Studies: ``ct-chest-lungs`` gets a generated chest CT of ``--slices`` slices of 512x512
(1 mm slices, 0.7 mm pixels), the size of issue 3's target (300 slices under 10 s);
``ct-kidney-tumour`` a generated abdominal CT of the same size with a renal tumour;
``cxr-abnormal`` one generated 2048x2048 MONOCHROME1 chest radiograph with a pleural
effusion, so that the occlusion saliency map (the costly part) is made and encoded;
``xr-fracture`` one generated 2048x2048 forearm radiograph with a fracture (Grad-CAM);
``mr-brain-atrophy`` a generated T1 brain MR of ``--slices``/2 slices of 256x256;
``us-nodule`` a thyroid ultrasound series of 20 generated stills of 560x640, one nodule
each (a thyroid examination has 20-40 stills; each image gets its own SEG);
``mr-cine-lv`` a short-axis cine stack of 10 levels x 25 phases of 192x192 (250 images,
a typical cardiac MR function series); ``cta-aneurysm`` a generated head CTA of 300
slices of 512x512 with two aneurysms; ``mg-calcification`` one generated 24 x 30 cm
mammogram (about 3000 x 2400 pixels at 0.1 mm) with two clusters, read in tiles;
``mr-liver-lesion`` a generated liver MR of 40 slices of 256x256 with three lesions;
``mr-kidney-tumour`` a generated kidney MR of 40 slices of 256x256 with a renal tumour;
``mr-brain-extraction`` the real Colin27 T1 as an axial series (181 slices of 217x181,
1 mm; Debian ``mricron-data``, which ``make bench`` installs; ``bench/brain_extraction.py``
times it through the whole node).

Reference in the same run: each model also runs once per round in plain fp32
(``infer.bf16 = false``; the node's default uses bf16 autocast on CPUs that have it),
alternating with the default, and the bench prints the ratio of the two medians, so
that a change of machine shows as the same ratio.

Usage::

    python bench/infer.py [--rounds 5] [--slices 300] [--threads 0] [--check] [--model NAME]

``--check`` exits 1 when a model's median is over 10 s per study.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO

from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.infer.manifest import ModelManifest
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.images import (
    mammogram_to_dataset,
    radiograph_to_dataset,
    ultrasound_to_datasets,
)
from dicom_ai_node.testing.phantoms.brain_mr import BrainPhantom, brain_mr_phantom
from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph
from dicom_ai_node.testing.phantoms.cine_mr import cine_phantom
from dicom_ai_node.testing.phantoms.extremity_xr import extremity_radiograph
from dicom_ai_node.testing.phantoms.head_cta import cta_phantom
from dicom_ai_node.testing.phantoms.kidney_ct import kidney_ct_phantom
from dicom_ai_node.testing.phantoms.kidney_mr import kidney_mr_phantom
from dicom_ai_node.testing.phantoms.liver_mr import liver_mr_phantom
from dicom_ai_node.testing.phantoms.mammography import mammogram
from dicom_ai_node.testing.phantoms.ultrasound import ultrasound_image
from dicom_ai_node.testing.series import (
    cine_to_datasets,
    make_ct_series,
    mr_to_datasets,
    phantom_to_datasets,
)

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 10.0
#: Models benched on a real image rather than a generated one (:func:`real_study`).
REAL_STUDIES = ("mr-brain-extraction",)


def reread(ds: Dataset) -> Dataset:
    """``ds`` written and read back, as the node reads a received file."""
    buffer = DicomBytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def study_for(manifest: ModelManifest, slices: int) -> list[Dataset]:
    """A generated study the model accepts (see the module's description)."""
    if manifest.name == "ct-chest-lungs":
        _, datasets = make_ct_series(slices, 512, 512, spacing_mm=(1.0, 0.7, 0.7), seed=5)
        return [reread(ds) for ds in datasets]
    if manifest.name == "ct-kidney-tumour":
        ph = kidney_ct_phantom(slices, 512, (1.0, 0.75, 0.75), seed=5, tumour=True)
        phantom = ChestPhantom(hu=ph.hu, labels=ph.labels, spacing_mm=ph.spacing_mm)
        datasets = phantom_to_datasets(phantom, seed=5, body_part_examined="ABDOMEN")
        return [reread(ds) for ds in datasets]
    if manifest.name == "cxr-abnormal":
        image = chest_radiograph(2048, np.random.default_rng(5), "effusion")
        return [
            reread(radiograph_to_dataset(image, seed=5, monochrome1=True, pixel_spacing_mm=0.17))
        ]
    if manifest.name == "xr-fracture":
        xr = extremity_radiograph(2048, np.random.default_rng(20_312), fracture=True)
        ds = radiograph_to_dataset(xr, seed=6, body_part_examined="FOREARM", pixel_spacing_mm=0.15)
        return [reread(ds)]
    if manifest.name == "mr-brain-atrophy":
        ph = brain_mr_phantom(slices // 2, 256, seed=5, atrophy=0.6)
        return [reread(ds) for ds in mr_to_datasets(ph, seed=5, series_description="T1 AX")]
    if manifest.name == "us-nodule":
        stills = [
            ultrasound_image(np.random.default_rng(20_500 + k), "thyroid", 1, (560, 640))
            for k in range(20)
        ]
        return [reread(ds) for ds in ultrasound_to_datasets(stills, seed=5)]
    if manifest.name == "cta-aneurysm":
        cta = cta_phantom(5, slices=slices, size=512, aneurysms=2)
        phantom = ChestPhantom(hu=cta.hu, labels=cta.labels, spacing_mm=cta.spacing_mm)
        datasets = phantom_to_datasets(phantom, seed=5, body_part_examined="HEAD")
        return [reread(ds) for ds in datasets]
    if manifest.name == "mg-calcification":
        mg = mammogram(np.random.default_rng(5), clusters=2, height_mm=300.0)
        return [reread(mammogram_to_dataset(mg, seed=5))]
    if manifest.name == "mr-liver-lesion":
        liver = liver_mr_phantom(5, slices=40, size=256, lesions=3)
        as_mr = BrainPhantom(liver.image, liver.labels, liver.spacing_mm, 0.0)
        datasets = mr_to_datasets(as_mr, seed=5, body_part_examined="ABDOMEN")
        return [reread(ds) for ds in datasets]
    if manifest.name == "mr-kidney-tumour":
        kidney = kidney_mr_phantom(40, 256, (4.0, 1.5, 1.5), seed=5, tumour=True)
        volume = BrainPhantom(kidney.hu.astype(np.float32), kidney.labels, kidney.spacing_mm, 0.0)
        datasets = mr_to_datasets(
            volume, seed=5, body_part_examined="ABDOMEN", series_description="T2 HASTE AX"
        )
        return [reread(ds) for ds in datasets]
    if manifest.name == "mr-cine-lv":
        ph = cine_phantom(5, levels=10, phases=25, size=192)
        return [reread(ds) for ds in cine_to_datasets(ph, seed=5)]
    raise SystemExit(f"bench/infer.py has no generated study for model {manifest.name}")


def real_study(manifest: ModelManifest) -> list[Dataset]:
    """The real study of a model that needs a real image (mr-brain-extraction: Colin27)."""
    from dicom_ai_node.testing.real_volumes import available, colin27_t1, to_datasets

    if available():
        raise SystemExit(f"{manifest.name}: install {', '.join(available())}")
    return [reread(ds) for ds in to_datasets(colin27_t1("axial"), seed=5)]


def one_study(registry: ModelRegistry, name: str, datasets: list[Dataset]) -> dict[str, float]:
    """Run one job's work on ``datasets``; seconds of each step."""
    manifest = registry.manifests[name]
    runner = registry.runner(name)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    volume, ordered, issues = load_volume(
        datasets,
        projection=manifest.projection,
        require_calibration=manifest.require_calibration,
        cine=manifest.cine,
    )
    assert volume is not None and not [i for i in issues if i.blocking], issues
    t1 = time.perf_counter()
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    t2 = time.perf_counter()
    results = encode_results(
        ordered,
        output,
        manifest.algorithm(device_uid(manifest.name, manifest.version)),
        f"bench/{name}",
        content_datetime=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    t3 = time.perf_counter()
    assert len(results) >= 2, "a SEG and an SR (an abnormal call for the classifier)"
    times.update(load=t1 - t0, infer=t2 - t1, encode=t3 - t2, total=t3 - t0)
    return times


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _line(label: str, rows: list[dict[str, float]]) -> str:
    parts = "  ".join(f"{k} {_median(rows, k):6.2f} s" for k in ("load", "infer", "encode"))
    return f"  {label:<9} total {_median(rows, 'total'):6.2f} s  ({parts})"


def main(argv: list[str] | None = None) -> int:
    """Run the bench; see the module's description."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="0: the cores available")
    parser.add_argument("--check", action="store_true", help=f"exit 1 over {TARGET_S} s")
    parser.add_argument("--model", action="append", help="only this model (repeatable)")
    args = parser.parse_args(argv)
    fast = ModelRegistry(REPO / "models", Device("cpu", args.threads, True))
    plain = ModelRegistry(REPO / "models", Device("cpu", args.threads, False))
    cores = len(os.sched_getaffinity(0))
    print(
        f"{dt.date.today()}  {platform.machine()}, {cores} cores, torch {torch.__version__}, "
        f"{fast.device.cpu_threads} threads; {args.rounds} rounds"
    )
    failed = False
    for manifest in fast:
        if args.model and manifest.name not in args.model:
            continue
        datasets = (
            real_study(manifest)
            if manifest.name in REAL_STUDIES
            else study_for(manifest, args.slices)
        )
        registries = {"node": fast, "plain": plain}
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in registries}
        for registry in registries.values():  # warm-up: weights, first-call allocations
            one_study(registry, manifest.name, datasets)
        for _ in range(args.rounds):  # alternating, so drift hits both alike
            for name, registry in registries.items():
                rows[name].append(one_study(registry, manifest.name, datasets))
        node_s, plain_s = _median(rows["node"], "total"), _median(rows["plain"], "total")
        print(f"{manifest.name} {manifest.version}: {len(datasets)} images")
        print(_line("node", rows["node"]))
        print(_line("plain", rows["plain"]))
        print(f"  ratio node/plain {node_s / plain_s:.2f}; target {TARGET_S:.0f} s per study")
        failed |= node_s > TARGET_S
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
