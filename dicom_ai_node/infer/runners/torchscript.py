"""Infer: the TorchScript runner, for 2-D slice-wise segmentation, image classification and
3-D brain extraction.

Contract with the weights (see :mod:`~dicom_ai_node.infer.tasks.segment`,
:mod:`~dicom_ai_node.infer.tasks.classify` and the model cards): ``forward`` takes float32
(N, 1, H, W) at the manifest's ``preprocess.input_size`` ((N, 3, H, W) for a 2.5-D model
with ``preprocess.context_mm``) and returns logits (N, 1 + labels, H, W) for
``task = "segmentation"``, (N, labels) for ``task = "classification"``. A
``task = "brain-extraction"`` model has two 3-D networks (``weights`` and
``preprocess.bbox_weights``) taking (1, 1, D, H, W) and returning (1, 2, D, H, W)
probabilities (:mod:`~dicom_ai_node.infer.tasks.brain`).
"""

from __future__ import annotations

import logging
import warnings

import torch

from ...errors import InferenceError
from ..manifest import ModelManifest
from ..runner import Device, Runner
from ..tasks.brain import BrainExtractor
from ..tasks.classify import ImageClassifier
from ..tasks.saliency import grad_cam
from ..tasks.segment import SliceSegmenter

__all__ = [
    "TorchScriptBrainExtractor",
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


class TorchScriptBrainExtractor(BrainExtractor):
    """Runs a brain-extraction model's two TorchScript networks (3-D; bf16 autocast with
    channels-last tensors where the CPU has it and the manifest allows it)."""

    networks: dict[str, torch.jit.ScriptModule]

    def _load(self) -> None:
        self.networks = {
            "bbox": load_torchscript(
                str(self.manifest.resolve(str(self.manifest.preprocess["bbox_weights"]))),
                self.manifest.name,
                self.torch_device,
            ),
            "brain": load_torchscript(
                str(self.manifest.weights_path), self.manifest.name, self.torch_device
            ),
        }
        log.info("model loaded", extra={"model": self.manifest.name, "device": self.device.kind})

    def _forward(self, network: str, x: torch.Tensor) -> torch.Tensor:
        module = self.networks[network]
        if self.use_bf16:  # channels-last helps bf16 here, and slowed float32 (MODEL_CARD.md)
            x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x)  # type: ignore[no-any-return]
        return module(x)  # type: ignore[no-any-return]


def make_torchscript_runner(manifest: ModelManifest, device: Device) -> Runner:
    """The runner of ``runner = "torchscript"``: a classifier, a slice segmenter or a
    brain extractor, by task."""
    if manifest.task == "brain-extraction":
        return TorchScriptBrainExtractor(manifest, device)
    if manifest.task == "classification":
        return TorchScriptClassifier(manifest, device)
    return TorchScriptRunner(manifest, device)
