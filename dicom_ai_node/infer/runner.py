"""Infer: the runner protocol (load, preprocess, predict, postprocess) and its registry.

Built-in runners register themselves here the same way a plug-in would, by name; the
manifest's ``runner`` key picks one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..domain import ModelOutput, Volume
from ..errors import ConfigError
from .manifest import ModelManifest

__all__ = ["Device", "Runner", "RunnerFactory", "make_runner", "register_runner", "runner_names"]


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
_RUNNERS: dict[str, RunnerFactory] = {}


def register_runner(name: str, factory: RunnerFactory) -> None:
    """Make a runner available to manifests under ``name``."""
    _RUNNERS[name] = factory


def runner_names() -> list[str]:
    """Names of the registered runners."""
    _load_builtins()
    return sorted(_RUNNERS)


def _load_builtins() -> None:
    # each registers its name; the optional libraries (onnxruntime, MONAI) are imported
    # only when a model of theirs loads
    from . import entry_point, monai_bundle, onnx_runner, torchscript  # noqa: F401


def make_runner(manifest: ModelManifest, device: Device) -> Runner:
    """Build (not yet load) the runner a manifest asks for.

    Raises
    ------
    ConfigError
        When no runner has that name.
    """
    _load_builtins()
    try:
        factory = _RUNNERS[manifest.runner]
    except KeyError:
        raise ConfigError(
            f"model {manifest.name}: unknown runner {manifest.runner!r}; known: {sorted(_RUNNERS)}"
        ) from None
    return factory(manifest, device)
