"""Training: what a run writes (TorchScript weights, metrics.json) and the command that runs it.

``metrics.json`` opens with the run record of :func:`dicom_ai_node.provenance.run_record`
(model, time, library versions, the command, smoke or not, the settings), then the
parameter count, the training time, the held-out scores and the acceptance thresholds
the model card states and its test checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.provenance import run_record

from .blocks import count_parameters

__all__ = ["export_frozen", "export_scripted", "main", "write_metrics"]


def export_frozen(model: nn.Module, path: Path) -> None:
    """Write TorchScript, scripted then frozen (batch norm folded into the convolutions);
    the file is replaced whole."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    scripted = torch.jit.freeze(torch.jit.script(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.jit.save(scripted, str(tmp))
    os.replace(tmp, path)


def export_scripted(model: nn.Module, path: Path) -> None:
    """Write TorchScript, scripted and not frozen (its layers stay modules, which the node's
    Grad-CAM saliency reaches into)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(model), str(path))


def write_metrics(folder: Path, record: dict[str, Any]) -> None:
    """Write ``folder/metrics.json`` (indented by 2, a newline at the end)."""
    (folder / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def main(
    argv: list[str] | None,
    script: ModuleType,
    *,
    unit: str = "slices",
    export: Callable[[nn.Module, Path], None] = export_frozen,
    postprocess: bool = False,
    evaluate_only: bool = False,
) -> int:
    """A training script's command line: train, export, score what ships, write metrics.json.

    ``script`` is the training script's module, beside its ``model.toml`` (the model's
    name); it defines ``Config`` (the run's settings, with ``smoke(seed)``),
    ``make_training_set(cfg)`` (a tuple of inputs, targets, ..., or a list of examples),
    ``train(cfg, data)`` (the trained network), ``evaluate(module, cfg)`` (the held-out
    scores of the exported weights) and ``ACCEPTANCE`` (the thresholds its card states).
    With ``postprocess`` it is ``evaluate(module, manifest, cfg)``, the manifest the one
    that ships (the folder's ``model.toml``, copied next to the weights), so that scoring
    uses the node's own post-processing rules. ``evaluate_only`` adds
    ``--evaluate-only``: score the weights already in ``--out`` and update their
    ``metrics.json``. The record names the script ``models/<folder>/train.py``.
    """
    folder = Path(str(script.__file__)).resolve().parent
    name = tomllib.loads((folder / "model.toml").read_text("utf-8"))["name"]
    config, acceptance = script.Config, script.ACCEPTANCE
    parser = argparse.ArgumentParser(description=(script.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s) for CI")
    if evaluate_only:
        parser.add_argument("--evaluate-only", action="store_true", help="score --out/model.pt")
    args = parser.parse_args(argv)
    rescore = evaluate_only and args.evaluate_only
    cfg = config.smoke(args.seed) if args.smoke else config(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parameters = None
    if not rescore:
        data = script.make_training_set(cfg)
        count = len(data[0]) if isinstance(data, tuple) else len(data)
        print(f"training set: {count} {unit} in {time.perf_counter() - started:.1f} s", flush=True)
        model = script.train(cfg, data)
        del data
        export(model, args.out / "model.pt")
        parameters = count_parameters(model)
    module = torch.jit.load(str(args.out / "model.pt"))  # score what ships
    if postprocess:
        if args.out.resolve() != folder:
            shutil.copy(folder / "model.toml", args.out / "model.toml")
        manifest = load_manifest(args.out / "model.toml")  # the node's post-processing rules
        metrics = script.evaluate(module, manifest, cfg)
    else:
        metrics = script.evaluate(module, cfg)
    elapsed = time.perf_counter() - started
    run = run_record(
        name,
        f"models.{folder.name}.train",
        argv or sys.argv[1:],
        smoke=args.smoke,
        config=asdict(cfg),
    )
    shown = json.dumps(metrics.get("summary", metrics), indent=2)
    if rescore:  # re-score what ships; the run record stays as trained
        path = args.out / "metrics.json"
        if path.exists():
            record = json.loads(path.read_text())
            record.update(held_out=metrics, acceptance=acceptance, evaluated=run)
            write_metrics(args.out, record)
        print(shown)
        return 0
    record = {
        **run,
        "parameters": parameters,
        "training_seconds": round(elapsed, 1),
        "held_out": metrics,
        "acceptance": acceptance,
    }
    write_metrics(args.out, record)
    print(shown)
    print(f"done in {elapsed:.1f} s", flush=True)
    return 0
