"""Infer: the model registry, discovered from ``<models_dir>/*/model.toml``.

Each model is loaded once, on first use or at start-up (``warm_up``), and stays warm. A
model whose weights come with a Python package that is not installed (manifest
``package``) is unavailable: listed with the reason, logged once, never routed to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain import InputSpec
from ..errors import ConfigError
from ..metrics import NodeMetrics
from .manifest import SERIES_NUMBER_BLOCK, ModelManifest, load_manifest
from .runner import Device, Runner, make_runner

if TYPE_CHECKING:
    from .bodyregion import BodyRegionModels

__all__ = ["ModelRegistry", "choose_device"]

log = logging.getLogger(__name__)


def _check_series_numbers(
    path: Path, manifest: ModelManifest, others: Iterable[ModelManifest]
) -> None:
    """Each model's results keep Series Numbers of their own (a block per model)."""
    low = manifest.series_number
    for other in others:
        if abs(other.series_number - low) < SERIES_NUMBER_BLOCK:
            raise ConfigError(
                f"{path}: series_number {low} of {manifest.name} is within "
                f"{SERIES_NUMBER_BLOCK} of {other.name}'s {other.series_number}; results of "
                "two models would share Series Numbers: set series_number in model.toml"
            )


def choose_device(setting: str, threads: int = 0, bf16: bool = True) -> Device:
    """``auto`` picks CUDA when torch sees a GPU, else the CPU.

    Raises
    ------
    ConfigError
        For ``cuda`` without a GPU, or an unknown value.
    """
    import torch

    if setting not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"infer.device must be auto, cpu or cuda, not {setting!r}")
    has_cuda = bool(torch.cuda.is_available())
    if setting == "cuda" and not has_cuda:
        raise ConfigError("infer.device is cuda but torch sees no CUDA device")
    kind = "cuda" if setting == "cuda" or (setting == "auto" and has_cuda) else "cpu"
    return Device(kind=kind, threads=threads, bf16=bf16)


class ModelRegistry:
    """Every model found under a folder, by name.

    Parameters
    ----------
    models_dir:
        Folder with one sub-folder per model, each holding ``model.toml``.
    device:
        Where models run.
    metrics:
        Where each load of a model's weights is counted, and which reads how many
        models are installed and loaded (a registry of its own when not given).

    Raises
    ------
    ConfigError
        On an invalid manifest or two models with the same name.
    """

    def __init__(
        self, models_dir: Path, device: Device, *, metrics: NodeMetrics | None = None
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.metrics = metrics if metrics is not None else NodeMetrics(process=False)
        self.manifests: dict[str, ModelManifest] = {}
        #: The body-region classifiers' manifests (``task = "body-region"``), one per
        #: modality; asked by the assembler for routing, not routed to.
        self.body_regions: list[ModelManifest] = []
        #: Models that cannot run here, by name, with the reason (their package missing).
        self.unavailable: dict[str, str] = {}
        #: Their manifests (the web screens show each one's version beside the reason).
        self.unavailable_manifests: dict[str, ModelManifest] = {}
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()
        seen: list[ModelManifest] = []
        for path in sorted(models_dir.glob("*/model.toml")):
            if path.parent.name.startswith("."):  # a model being added (infer/install.py)
                continue
            manifest = load_manifest(path)
            if manifest.task == "body-region":  # infer/bodyregion.py, for routing
                for other in self.body_regions:
                    both = sorted(manifest.input.modalities & other.input.modalities)
                    if both:
                        raise ConfigError(
                            f"{path}: a second body-region model for {', '.join(both)} "
                            f"(besides {other.name})"
                        )
                self.body_regions.append(manifest)
                continue
            if manifest.name in self.manifests or manifest.name in self.unavailable:
                raise ConfigError(f"{path}: model name {manifest.name!r} used twice")
            _check_series_numbers(path, manifest, seen)  # an unavailable model's too
            seen.append(manifest)
            reason = manifest.unavailable
            if reason:
                self.unavailable[manifest.name] = reason
                self.unavailable_manifests[manifest.name] = manifest
                log.warning(
                    "model unavailable: %s",
                    reason,
                    extra={"model": manifest.name, "manifest": str(path)},
                )
                continue
            self.manifests[manifest.name] = manifest
        self.metrics.watch_models(
            len(self.manifests), lambda: len(self._runners), unavailable=len(self.unavailable)
        )

    def __iter__(self) -> Iterator[ModelManifest]:
        return iter(self.manifests.values())

    def __len__(self) -> int:
        return len(self.manifests)

    @property
    def specs(self) -> Mapping[str, InputSpec]:
        """Each model's declared input, for the router."""
        return {name: m.input for name, m in self.manifests.items()}

    def is_warm(self, name: str) -> bool:
        """Whether the model's weights are loaded."""
        return name in self._runners

    def runner(self, name: str) -> Runner:
        """The loaded runner of a model (loading it on first use)."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is None:
                runner = make_runner(self.manifests[name], self.device)
                runner.load()
                self._runners[name] = runner
                self.metrics.model_loaded(name)
            return runner

    def body_region_model(self) -> BodyRegionModels | None:
        """The body-region classifiers, if the models folder has any."""
        if not self.body_regions:
            return None
        from .bodyregion import BodyRegionModel, BodyRegionModels

        return BodyRegionModels([BodyRegionModel(m, self.device) for m in self.body_regions])

    def warm_up(self) -> None:
        """Load every model now, so the first study does not wait."""
        for name in self.manifests:
            self.runner(name)
