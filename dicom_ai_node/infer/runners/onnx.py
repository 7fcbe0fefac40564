"""Infer: the ONNX runner (onnxruntime), for 2-D slice-wise segmentation and classification.

The graph follows the same contract as TorchScript weights
(:mod:`~dicom_ai_node.infer.tasks.segment`, :mod:`~dicom_ai_node.infer.tasks.classify`):
one float32 input (N, 1, H, W) at ``preprocess.input_size``, first output logits
(N, 1 + labels, H, W) for segmentation, (N, labels) for classification; the batch axis
should be dynamic (a fixed batch of 1 works, one image at a time). A classifier's
saliency is occlusion (forward passes only). onnxruntime is an optional dependency:
``pip install 'dicom-ai-node[onnx]'``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError, InferenceError
from ..manifest import ModelManifest
from ..runner import Device, Runner
from ..tasks.classify import ImageClassifier
from ..tasks.segment import SliceSegmenter

__all__ = ["OnnxClassifier", "OnnxRunner", "make_onnx_runner"]

log = logging.getLogger(__name__)


class _OnnxSession:
    """Loads an ONNX graph with onnxruntime on the CPU (or CUDA when the build has it) and
    runs batches through it; shared by the segmentation and classification runners."""

    manifest: ModelManifest
    device: Device
    session: Any = None
    _input_name = ""
    _fixed_batch: int | None = None

    def _load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError(
                f"model {self.manifest.name}: the onnx runner needs onnxruntime "
                "(pip install 'dicom-ai-node[onnx]')"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.device.cpu_threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if self.device.kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(
                str(self.manifest.weights_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"model {self.manifest.name}: cannot load weights: {exc}") from exc
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InferenceError(
                f"model {self.manifest.name}: the graph must take one (N, 1, H, W) input, "
                f"it takes {[(i.name, i.shape) for i in inputs]}"
            )
        batch = inputs[0].shape[0]
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self._input_name = inputs[0].name
        self.session = session
        log.info("model loaded", extra={"model": self.manifest.name, "device": providers[0]})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        step = self._fixed_batch or len(batch)
        outputs = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            short = step - len(chunk)  # a graph with a fixed batch gets the last one padded
            if short:
                chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), np.float32)])
            out = self.session.run(None, {self._input_name: chunk})[0]
            outputs.append(out[: step - short])
        return torch.from_numpy(np.concatenate(outputs)).to(x.device)


class OnnxRunner(_OnnxSession, SliceSegmenter):
    """A 2-D segmentation ONNX graph, slice by slice."""


class OnnxClassifier(_OnnxSession, ImageClassifier):
    """An image classification ONNX graph, image by image."""


def make_onnx_runner(manifest: ModelManifest, device: Device) -> Runner:
    """The runner of ``runner = "onnx"``: a classifier or a slice segmenter, by task."""
    if manifest.task == "classification":
        return OnnxClassifier(manifest, device)
    return OnnxRunner(manifest, device)
