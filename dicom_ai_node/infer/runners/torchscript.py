"""Infer: the TorchScript runner, for 2-D slice-wise segmentation and image classification.

Contract with the weights (see :mod:`~dicom_ai_node.infer.tasks.segment`,
:mod:`~dicom_ai_node.infer.tasks.classify` and the model cards): ``forward`` takes float32
(N, 1, H, W) at the manifest's ``preprocess.input_size`` ((N, 3, H, W) for a 2.5-D model
with ``preprocess.context_mm``) and returns logits (N, 1 + labels, H, W) for
``task = "segmentation"``, (N, labels) for ``task = "classification"``.
"""

from __future__ import annotations

import logging
import warnings

import torch

from ...errors import InferenceError
from ..manifest import ModelManifest
from ..runner import Device, Runner
from ..tasks.classify import ImageClassifier
from ..tasks.saliency import grad_cam
from ..tasks.segment import SliceSegmenter

__all__ = [
    "TorchScriptClassifier",
    "TorchScriptRunner",
    "load_torchscript",
    "make_torchscript_runner",
]

log = logging.getLogger(__name__)


def load_torchscript(path: str, name: str, device: torch.device) -> torch.jit.ScriptModule:
    """Load a TorchScript file for inference (eval mode).

    Raises
    ------
    InferenceError
        When the file is not a TorchScript module this torch can load.
    """
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but it is the format
            # the manifest names; the warning is noise for the operator
            warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
            module = torch.jit.load(path, map_location=device)  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError, OSError) as exc:
        raise InferenceError(f"model {name}: cannot load weights: {exc}") from exc
    module.eval()
    return module  # type: ignore[no-any-return]


class _TorchScriptModule:
    """Loads the manifest's TorchScript file and runs batches through it (channels-last,
    bf16 autocast where the CPU has it); shared by the segmenter and the classifier."""

    manifest: ModelManifest
    torch_device: torch.device
    use_bf16: bool
    device: Device
    module: torch.jit.ScriptModule | None = None

    def _load(self) -> None:
        self.module = load_torchscript(
            str(self.manifest.weights_path), self.manifest.name, self.torch_device
        )
        log.info("model loaded", extra={"model": self.manifest.name, "device": self.device.kind})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.module is not None
        x = x.contiguous(memory_format=torch.channels_last)
        if self.use_bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.module(x)  # type: ignore[no-any-return]
        return self.module(x)  # type: ignore[no-any-return]


class TorchScriptRunner(_TorchScriptModule, SliceSegmenter):
    """Runs a TorchScript module slice by slice."""


class TorchScriptClassifier(_TorchScriptModule, ImageClassifier):
    """Runs a TorchScript image classifier; it can also make Grad-CAM maps."""

    def _grad_cam(self, image: torch.Tensor, label_index: int) -> torch.Tensor:
        assert self.module is not None
        try:
            image = image.to(self.torch_device)
            return grad_cam(self.module, image, label_index, self.saliency_layer).cpu()
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"model {self.manifest.name}: Grad-CAM: {exc}") from exc


def make_torchscript_runner(manifest: ModelManifest, device: Device) -> Runner:
    """The runner of ``runner = "torchscript"``: a classifier or a slice segmenter, by task."""
    if manifest.task == "classification":
        return TorchScriptClassifier(manifest, device)
    return TorchScriptRunner(manifest, device)
