"""Infer: the runner protocol (load, preprocess, predict, postprocess) and its name table.

The manifest's ``runner`` key names a runner. Every name, built-in or plug-in, is an
entry of one table: a factory, or the ``"module:attribute"`` of one, imported the first
time a manifest names it (:func:`make_runner`). The built-in runners
(:data:`BUILTIN_RUNNERS`, in :mod:`dicom_ai_node.infer.runners`) are entries like any
other, so this module imports none of them, and a runner's optional library
(onnxruntime, MONAI) is imported only when a model of its kind loads.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..domain import ModelOutput, Volume
from ..errors import ConfigError
from .manifest import ModelManifest

__all__ = [
    "BUILTIN_RUNNERS",
    "Device",
    "Runner",
    "RunnerFactory",
    "make_runner",
    "register_runner",
    "runner_names",
]


@dataclass(frozen=True)
class Device:
    """Where a model runs: ``cpu`` or ``cuda``, threads, and whether to use bf16 on CPU."""

    kind: str = "cpu"
    threads: int = 0
    bf16: bool = True

    @property
    def cpu_threads(self) -> int:
        """Threads to use on CPU: the configured number, or the cores this process may use."""
        return self.threads or max(1, len(os.sched_getaffinity(0)))


class Runner(Protocol):
    """What every model runner does; the worker calls these in order.

    ``load`` is called once and the runner stays warm; the other three run per job.
    """

    manifest: ModelManifest

    def load(self) -> None:
        """Load weights onto the device."""

    def preprocess(self, volume: Volume) -> Any:
        """Turn a volume into the model's input."""

    def predict(self, inputs: Any) -> Any:
        """Run the model."""

    def postprocess(self, prediction: Any, volume: Volume) -> ModelOutput:
        """Turn the model's output into labels and measurements in the volume's geometry."""


RunnerFactory = Callable[[ModelManifest, Device], Runner]

#: The built-in runners: manifest name -> ``"module:attribute"`` of the factory.
BUILTIN_RUNNERS: dict[str, str] = {
    "torchscript": "dicom_ai_node.infer.runners.torchscript:make_torchscript_runner",
    "onnx": "dicom_ai_node.infer.runners.onnx:make_onnx_runner",
    "monai-bundle": "dicom_ai_node.infer.runners.monai_bundle:MonaiBundleRunner",
    "python": "dicom_ai_node.infer.runners.python:make_python_runner",
}

#: Every runner by name: a factory, or where to import one from (resolved on first use);
#: the built-ins are entries like a plug-in's.
_RUNNERS: dict[str, RunnerFactory | str] = dict(BUILTIN_RUNNERS)


def register_runner(name: str, factory: RunnerFactory | str) -> None:
    """Make a runner available to manifests under ``name``.

    ``factory`` is called with the manifest and the device and returns a :class:`Runner`;
    given as ``"module:attribute"``, it is imported the first time a manifest names it.
    """
    _RUNNERS[name] = factory


def runner_names() -> list[str]:
    """Names of the registered runners."""
    return sorted(_RUNNERS)


def _resolve(name: str, entry: RunnerFactory | str) -> RunnerFactory:
    """The factory of a table entry, imported (once) if the entry is its path.

    Raises
    ------
    ImportError, AttributeError
        When the ``"module:attribute"`` cannot be imported.
    """
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    factory: RunnerFactory = getattr(importlib.import_module(module), attribute)
    _RUNNERS[name] = factory
    return factory


def make_runner(manifest: ModelManifest, device: Device) -> Runner:
    """Build (not yet load) the runner a manifest asks for.

    Raises
    ------
    ConfigError
        When no runner has that name, or the one registered cannot be imported.
    """
    entry = _RUNNERS.get(manifest.runner)
    if entry is None:
        raise ConfigError(
            f"model {manifest.name}: unknown runner {manifest.runner!r}; known: {sorted(_RUNNERS)}"
        )
    try:
        factory = _resolve(manifest.runner, entry)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"model {manifest.name}: runner {manifest.runner!r} cannot be imported: {exc}"
        ) from exc
    return factory(manifest, device)
