"""Measure the built-in mr-brain-extraction model on a real T1 (Colin27) and write metrics.json.

Colin27 (Debian ``mricron-data``) goes through the node as it would arrive: an axial, a
sagittal and a coronal MR series (:mod:`dicom_ai_node.testing.real_volumes`), read back
by the node's ``load_volume`` and run by the node's own runner, in float32 and with
bfloat16 autocast. Each mask (parenchyma and CSF together) is compared in the series'
own geometry with the reference brain masks ``ch2bet`` and ``ch2better``; the deepbet
package's own ``run_bet`` on the NIfTI file gives the mask the node must reproduce.
Usage (from the repository's root; needs the ``test`` extra and scripts/install-tools.sh)::

    python -m models.mr_brain_extraction.evaluate [--repeats 3] [--out metrics.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.infer.package import package_version
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device, Runner
from dicom_ai_node.infer.tasks.network import bf16_supported
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.provenance import cpu_model
from dicom_ai_node.testing.real_volumes import (
    COLIN27_DIR,
    PLANES,
    colin27_brain_mask,
    colin27_t1,
    dice,
    to_datasets,
)

HERE = Path(__file__).resolve().parent
NAME = "mr-brain-extraction"
#: What the test suite holds the model to on every plane (tests/models).
ACCEPTANCE = {"brain_dice_min": 0.93, "reference": "ch2bet"}
REFERENCES = ("ch2bet", "ch2better")


def measures(output: ModelOutput) -> dict[str, float]:
    """The SR's numbers by concept meaning (parenchyma and CSF volumes by label name)."""
    names = {label.value: label.name for label in output.labels}
    out = {}
    for m in output.measurements:
        key = (
            f"{names[m.label_value]} volume" if m.concept.meaning == "Volume" else m.concept.meaning
        )
        out[key] = round(m.value, 4)
    return out


def run_plane(runner: Runner, plane: str, repeats: int) -> dict[str, Any]:
    """One plane through load_volume and the runner: Dice, measurements and seconds."""
    series = to_datasets(colin27_t1(plane), seed=27, series_description=f"T1 MPRAGE {plane}")
    volume, _, issues = load_volume(series)
    assert volume is not None and not [i for i in issues if i.blocking], issues
    seconds, cpu_seconds = [], []
    output = None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu)
    assert output is not None and output.label_map is not None
    mask = output.label_map > 0
    result: dict[str, Any] = {
        f"dice_{ref}": round(dice(mask, colin27_brain_mask(ref, plane)), 4) for ref in REFERENCES
    }
    result |= {"measurements": measures(output), "seconds": [round(s, 2) for s in seconds]}
    result["seconds_median"] = round(statistics.median(seconds), 2)
    # CPU time of all threads: steadier than wall time on a shared machine
    result["cpu_seconds_median"] = round(statistics.median(cpu_seconds), 2)
    return result


def as_axial(array: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """An array of ch2.nii.gz's grid (RAS) in the axial series' voxel order: slices
    first, rows to posterior, columns to the left (checked against the T1 itself)."""
    import nibabel

    def turn(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.ascontiguousarray(a[::-1, ::-1, :].transpose(2, 1, 0))

    t1 = np.asarray(nibabel.load(COLIN27_DIR / "ch2.nii.gz").dataobj)
    assert np.array_equal(turn(t1), colin27_t1("axial").voxels), "axial order differs"
    return turn(array)


def deepbet_reference() -> dict[str, Any]:
    """deepbet's own ``run_bet`` path on the NIfTI file (its mask, on the file's grid)."""
    from deepbet import BrainExtraction

    extraction = BrainExtraction(no_gpu=True)
    start = time.perf_counter()
    _, mask_image, tiv = extraction.run(str(COLIN27_DIR / "ch2.nii.gz"))
    seconds = time.perf_counter() - start
    return {"mask": np.asarray(mask_image.dataobj) > 0, "tiv_ml": float(tiv), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per plane")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "metrics.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "bf16"] if bf16_supported() else ["fp32"]
    results: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        device = Device("cpu", args.threads, bf16=precision == "bf16")
        runner = ModelRegistry(HERE.parent, device).runner(NAME)
        results[precision] = {}
        for plane in PLANES:
            results[precision][plane] = row = run_plane(runner, plane, args.repeats)
            print(precision, plane, json.dumps(row), flush=True)
    reference = deepbet_reference()
    axial = to_datasets(colin27_t1("axial"), seed=27, series_description="T1 MPRAGE axial")
    volume, _, _ = load_volume(axial)
    assert volume is not None
    runner = ModelRegistry(HERE.parent, Device("cpu", args.threads, bf16=False)).runner(NAME)
    ours = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    assert ours.label_map is not None
    theirs = as_axial(reference["mask"])
    networks = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in getattr(runner, "networks", {}).items()
    }
    metrics = {
        "model": NAME,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m models.mr_brain_extraction.evaluate",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "deepbet": package_version("deepbet"),
        "cpu": cpu_model(),
        "threads": args.threads,
        "parameters": networks,
        "image": "Colin27 T1 (Debian mricron-data ch2.nii.gz), 181x217x181 at 1 mm",
        "results": results,
        "deepbet_run_bet": {
            "tiv_ml": round(reference["tiv_ml"], 3),
            "seconds": round(reference["seconds"], 2),
            "dice_ch2bet": round(dice(theirs, colin27_brain_mask("ch2bet", "axial")), 4),
            "node_fp32_axial_voxels_differing": int(
                np.count_nonzero((ours.label_map > 0) ^ theirs)
            ),
        },
        "acceptance": ACCEPTANCE,
    }
    args.out.write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
