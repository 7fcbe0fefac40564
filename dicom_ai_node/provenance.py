"""Core: where a built-in model's weights came from: the run record opening its ``metrics.json``.

Every ``models/*/train.py`` writes one, so a model card's figures can be traced to the
command, library versions and settings that produced them; :func:`cpu_model` names the
CPU that evaluation scripts and benches measured on. No heavy imports: the versions are
read from the installed packages' metadata.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["cpu_model", "run_record"]


def run_record(
    model: str, module: str, argv: Sequence[str], *, smoke: bool, config: Any
) -> dict[str, Any]:
    """The first keys of a training run's ``metrics.json``.

    Parameters
    ----------
    model:
        The model's name, as in its ``model.toml``.
    module:
        The training script as a module, run from the repository (``models.<dir>.train``).
    argv:
        Its arguments, to record the command that reruns it.
    smoke:
        Whether it was a ``--smoke`` run (never shipped).
    config:
        The run's settings, a JSON-ready mapping (e.g. ``dataclasses.asdict``).
    """
    return {
        "model": model,
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": importlib.metadata.version("torch"),
        "numpy": importlib.metadata.version("numpy"),
        "python": platform.python_version(),
        "command": " ".join(["python", "-m", module, *argv]),
        "smoke": bool(smoke),
        "config": config,
    }


def cpu_model() -> str:
    """The CPU's name as ``lscpu`` prints it on its ``Model name`` line
    (``platform.processor()`` without lscpu), for the machine a figure was measured on."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "?"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or "?"
