"""Infer: the runner for a MONAI bundle folder, as the MONAI model zoo publishes them.

The manifest's ``weights`` names the bundle folder (inside the model's folder), which
holds ``configs/metadata.json`` and ``configs/inference.json`` and the weights in
``models/``: ``model.ts`` (TorchScript) if present, else ``model.pt`` (a state dict)
loaded into the network that ``network_def`` of ``inference.json`` describes, through
MONAI's own config parser.

What the node does, and what it does not:

- The network's spatial dimensions come from ``network_data_format.inputs.image`` of
  ``metadata.json`` (``spatial_shape`` of length 2 or 3).
- 2-D bundles run slice by slice like the TorchScript runner
  (:mod:`~dicom_ai_node.infer.tasks.segment`), at ``preprocess.input_size`` of the
  manifest or else the bundle's spatial shape.
- 3-D bundles run on the whole series with MONAI's sliding-window inference, windows of
  ``inferer.roi_size`` of ``inference.json`` (else the spatial shape), Gaussian blending,
  ``preprocess.overlap`` (0.25) and ``preprocess.batch_size`` windows at a time. The
  volume is passed as (1, 1, columns, rows, slices): MONAI's ITK reader order (x, y, z)
  for a DICOM series.
- The bundle's ``preprocessing`` section (file loading, orientation, spacing) is not run:
  the node gives the series at its own spacing, rescaled (HU for CT) and windowed to
  0..1 by ``preprocess.intensity_range`` when the manifest has it. A bundle that needs
  resampling to a fixed spacing is wrapped with a Python entry point instead
  (docs/models.md).

MONAI is an optional dependency: ``pip install 'dicom-ai-node[monai]'``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError, InferenceError
from ..manifest import ModelManifest
from ..runner import Device
from ..tasks.segment import SliceSegmenter, SliceStack, label_argmax
from .torchscript import load_torchscript

__all__ = ["MonaiBundleRunner", "bundle_spatial_shape"]

log = logging.getLogger(__name__)


def _json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {name}: cannot read {path.name} of its bundle: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"model {name}: {path.name} of its bundle is not a JSON object")
    return data


def bundle_spatial_shape(bundle: Path, name: str) -> tuple[int, ...]:
    """The network input's spatial shape, from ``configs/metadata.json``.

    Raises
    ------
    ConfigError
        When the metadata lacks ``network_data_format.inputs.image.spatial_shape`` of
        two or three positive integers.
    """
    metadata = _json(bundle / "configs" / "metadata.json", name)
    try:
        shape = metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    except (KeyError, TypeError):
        shape = None
    if (
        not isinstance(shape, list)
        or len(shape) not in (2, 3)
        or not all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise ConfigError(
            f"model {name}: metadata.json needs network_data_format.inputs.image."
            f"spatial_shape as 2 or 3 positive integers, got {shape!r}"
        )
    return tuple(shape)


class MonaiBundleRunner(SliceSegmenter):
    """Runs the network of a MONAI bundle (see the module's description)."""

    network: Any = None

    def __init__(self, manifest: ModelManifest, device: Device) -> None:
        super().__init__(manifest, device)
        self.bundle = manifest.weights_path
        self.spatial_shape = bundle_spatial_shape(self.bundle, manifest.name)
        if "input_size" not in manifest.preprocess and len(self.spatial_shape) == 2:
            self.input_size = (self.spatial_shape[0], self.spatial_shape[1])
        self.overlap = float(manifest.preprocess.get("overlap", 0.25))
        inferer = _json(self.bundle / "configs" / "inference.json", manifest.name).get(
            "inferer", {}
        )
        roi = inferer.get("roi_size") if isinstance(inferer, dict) else None
        self.roi_size = tuple(roi) if isinstance(roi, list) else self.spatial_shape

    def _load(self) -> None:
        name = self.manifest.name
        scripted = self.bundle / "models" / "model.ts"
        if scripted.is_file():
            self.network = load_torchscript(str(scripted), name, self.torch_device)
        else:
            self.network = self._network_from_config()
        log.info("model loaded", extra={"model": name, "device": self.device.kind})

    def _network_from_config(self) -> torch.nn.Module:
        name = self.manifest.name
        try:
            from monai.bundle.config_parser import ConfigParser
        except ImportError as exc:
            raise ConfigError(
                f"model {name}: a bundle without models/model.ts needs MONAI "
                "(pip install 'dicom-ai-node[monai]')"
            ) from exc
        weights = self.bundle / "models" / "model.pt"
        parser = ConfigParser()
        parser.read_config(str(self.bundle / "configs" / "inference.json"))
        try:
            network = parser.get_parsed_content("network_def")
            state = torch.load(weights, map_location=self.torch_device, weights_only=True)
            if isinstance(state, dict) and "model" in state and len(state) <= 3:
                state = state["model"]  # a checkpoint saved with its optimiser
            network.load_state_dict(state)
        except Exception as exc:  # MONAI's parser and torch raise many kinds
            raise InferenceError(f"model {name}: cannot build the bundle's network: {exc}") from exc
        if not isinstance(network, torch.nn.Module):
            raise InferenceError(f"model {name}: network_def is not a torch module")
        return network.to(self.torch_device).eval()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)  # type: ignore[no-any-return]

    def predict(self, inputs: torch.Tensor | SliceStack) -> torch.Tensor:
        """Label map (slices, rows, columns) uint8."""
        if len(self.spatial_shape) == 2:
            return super().predict(inputs)
        if isinstance(inputs, SliceStack):  # neighbours as channels: a 2-D idea
            raise InferenceError(
                f"model {self.manifest.name}: a 3-D bundle reads the volume; "
                "preprocess.context_mm is for 2-D networks"
            )
        self.load()
        from monai.inferers.utils import sliding_window_inference

        volume = inputs[:, 0].permute(2, 1, 0)[None, None]  # (1, 1, columns, rows, slices)
        with torch.inference_mode():
            logits = sliding_window_inference(
                volume.to(self.torch_device).contiguous(),
                roi_size=self.roi_size,
                sw_batch_size=self.batch_size,
                predictor=self.network,
                overlap=self.overlap,
                mode="gaussian",
            )
        assert isinstance(logits, torch.Tensor)
        classes = 1 + len(self.manifest.labels)
        if logits.shape[1] != classes:
            raise InferenceError(
                f"model {self.manifest.name}: the network returned {tuple(logits.shape)}, "
                f"not {classes} channels: one for background and one per label"
            )
        return label_argmax(logits)[0].permute(2, 1, 0).cpu().contiguous()
