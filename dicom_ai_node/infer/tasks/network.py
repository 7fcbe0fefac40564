"""Infer: what every 2-D network shares: loaded once and kept warm, batches, bf16 on CPU.

:class:`WarmTorch` loads a model's networks once, thread-safe, and says on which torch
device and whether with bf16 autocast to run them (also the base of the 3-D brain
extractor, :mod:`.brain`). :class:`WarmNetwork` is the base of the slice segmenter
(:mod:`.segment`) and the image classifier (:mod:`.classify`): the input size, the batch
size and the intensity window of the manifest.
"""

from __future__ import annotations

import threading
from functools import cache

import torch

from ...errors import ConfigError
from ..manifest import ModelManifest
from ..runner import Device

__all__ = ["WarmNetwork", "WarmTorch", "bf16_supported", "intensity_range"]


@cache
def bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def intensity_range(manifest: ModelManifest) -> tuple[float, float] | None:
    """``preprocess.intensity_range`` as (low, high), validated; None when absent.

    Raises
    ------
    ConfigError
        When it is not two increasing numbers.
    """
    value = manifest.preprocess.get("intensity_range")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) for v in value)
        or value[0] >= value[1]
    ):
        raise ConfigError(
            f"model {manifest.name}: preprocess.intensity_range must be [low, high], got {value!r}"
        )
    return float(value[0]), float(value[1])


class WarmTorch:
    """A model's torch networks, loaded once (thread-safe) and kept warm.

    Subclasses implement :meth:`_load`, called once by :meth:`load`.

    Parameters
    ----------
    manifest:
        The model's manifest.
    device:
        Where to run.
    """

    def __init__(self, manifest: ModelManifest, device: Device) -> None:
        self.manifest = manifest
        self.device = device
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def torch_device(self) -> torch.device:
        """The torch device."""
        return torch.device("cuda" if self.device.kind == "cuda" else "cpu")

    @property
    def use_bf16(self) -> bool:
        """bf16 autocast only on CPUs with native support (3.7x faster here, FACTS.md)."""
        return self.device.kind == "cpu" and self.device.bf16 and bf16_supported()

    def load(self) -> None:
        """Load the networks once (thread-safe)."""
        with self._lock:
            if self._loaded:
                return
            if self.device.kind == "cpu":
                torch.set_num_threads(self.device.cpu_threads)
            self._load()
            self._loaded = True

    def _load(self) -> None:
        raise NotImplementedError


class WarmNetwork(WarmTorch):
    """A 2-D network run in batches at one input size, loaded once and kept warm.

    What the slice segmenter (:mod:`.segment`) and the image classifier
    (:mod:`.classify`) share. Subclasses implement :meth:`_load` (once) and
    :meth:`_forward` (per batch).

    Parameters
    ----------
    manifest:
        The model's manifest (``preprocess.input_size``, ``preprocess.batch_size``,
        ``preprocess.intensity_range``).
    device:
        Where to run.
    default_size:
        The input size when the manifest gives none.
    """

    def __init__(self, manifest: ModelManifest, device: Device, default_size: int = 128) -> None:
        super().__init__(manifest, device)
        size = manifest.preprocess.get("input_size", [default_size, default_size])
        self.input_size = (int(size[0]), int(size[1]))
        self.batch_size = int(manifest.preprocess.get("batch_size", 16))
        self.window = intensity_range(manifest)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for a batch (N, 1, h, w) at the input size."""
        raise NotImplementedError
