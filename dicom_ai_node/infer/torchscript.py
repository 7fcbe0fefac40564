"""Infer: the TorchScript runner for 2-D slice-wise segmentation models.

Contract with the weights (see models/ct_chest_lungs/MODEL_CARD.md): ``forward`` takes
float32 (N, 1, H, W) in the modality's rescaled units (HU for CT) at the manifest's
``preprocess.input_size`` and returns logits (N, 1 + labels, H, W).
"""

from __future__ import annotations

import logging
import threading
import warnings
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from ..domain import Code, Measurement, ModelOutput, Volume
from ..errors import InferenceError
from .manifest import ModelManifest
from .runner import Device, register_runner

__all__ = ["TorchScriptRunner", "bf16_supported"]

log = logging.getLogger(__name__)
VOLUME = Code("118565006", "SCT", "Volume")
MM3 = Code("mm3", "UCUM", "cubic millimeter")


@cache
def bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TorchScriptRunner:
    """Runs a TorchScript module slice by slice in batches, kept warm after :meth:`load`.

    Parameters
    ----------
    manifest:
        The model's manifest (``preprocess.input_size``, ``preprocess.batch_size``,
        ``postprocess.measurements``).
    device:
        Where to run.
    """

    def __init__(self, manifest: ModelManifest, device: Device) -> None:
        self.manifest = manifest
        self.device = device
        self.module: torch.jit.ScriptModule | None = None
        self._lock = threading.Lock()
        size = manifest.preprocess.get("input_size", [128, 128])
        self.input_size = (int(size[0]), int(size[1]))
        self.batch_size = int(manifest.preprocess.get("batch_size", 16))

    @property
    def torch_device(self) -> torch.device:
        """The torch device."""
        return torch.device("cuda" if self.device.kind == "cuda" else "cpu")

    @property
    def use_bf16(self) -> bool:
        """bf16 autocast only on CPUs with native support (3.7x faster here, FACTS.md)."""
        return self.device.kind == "cpu" and self.device.bf16 and bf16_supported()

    def load(self) -> None:
        """Load the weights once (thread-safe)."""
        with self._lock:
            if self.module is not None:
                return
            if self.device.kind == "cpu":
                torch.set_num_threads(self.device.cpu_threads)
            try:
                with warnings.catch_warnings():
                    # TorchScript is deprecated in favour of torch.export, but it is the
                    # format the manifest names; the warning is noise for the operator
                    warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
                    module = torch.jit.load(  # type: ignore[no-untyped-call]
                        str(self.manifest.weights_path), map_location=self.torch_device
                    )
            except (RuntimeError, ValueError, OSError) as exc:
                raise InferenceError(
                    f"model {self.manifest.name}: cannot load weights: {exc}"
                ) from exc
            module.eval()
            self.module = module
            log.info(
                "model loaded", extra={"model": self.manifest.name, "device": self.device.kind}
            )

    def preprocess(self, volume: Volume) -> torch.Tensor:
        """The slices as float32 (N, 1, rows, columns); resizing happens per batch."""
        return torch.from_numpy(np.ascontiguousarray(volume.voxels)).unsqueeze(1)

    def _batch(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        assert self.module is not None
        x = x.to(self.torch_device)
        x = F.interpolate(x, size=self.input_size, mode="area")
        x = x.contiguous(memory_format=torch.channels_last)
        if self.use_bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self.module(x)
        else:
            logits = self.module(x)
        logits = F.interpolate(logits.float(), size=out_hw, mode="bilinear", align_corners=False)
        return logits.argmax(dim=1).to(torch.uint8).cpu()

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Label map (N, rows, columns) uint8, computed batch by batch to bound memory."""
        if self.module is None:
            self.load()
        out_hw = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        result = torch.empty((inputs.shape[0], *out_hw), dtype=torch.uint8)
        with torch.inference_mode():
            for start in range(0, inputs.shape[0], self.batch_size):
                stop = start + self.batch_size
                result[start:stop] = self._batch(inputs[start:stop], out_hw)
        return result

    def postprocess(self, prediction: torch.Tensor, volume: Volume) -> ModelOutput:
        """Labels and, if the manifest asks, the volume of each label in mm3."""
        label_map = prediction.numpy().astype(np.uint8, copy=False)
        measurements = []
        if "volume" in self.manifest.postprocess.get("measurements", []):
            counts = np.bincount(label_map.ravel(), minlength=len(self.manifest.labels) + 1)
            for label in self.manifest.labels:
                measurements.append(
                    Measurement(
                        label_value=label.value,
                        concept=VOLUME,
                        value=float(counts[label.value]) * volume.voxel_volume_mm3,
                        unit=MM3,
                    )
                )
        return ModelOutput(
            labels=self.manifest.labels, label_map=label_map, measurements=tuple(measurements)
        )


register_runner("torchscript", TorchScriptRunner)
