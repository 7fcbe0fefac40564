"""Infer: image classification (one probability per label and image) with saliency.

Contract with the network: ``forward`` takes float32 (N, 1, H, W) at the manifest's
``preprocess.input_size`` and returns logits (N, labels). Projection radiographs
(``preprocess.geometry = "projection"``) are scaled per image by
:func:`.radiograph.scale_radiographs`; other images by ``preprocess.intensity_range``.

Each image of the series is classified on its own. Per image and label the output holds:

* the probability (NUM Probability, 122157 DCM) and whether the finding is present at
  ``postprocess.threshold`` (Present 52101004 / Absent 272519000, SCT);
* with ``postprocess.saliency`` (``true`` or ``"occlusion"``; ``"grad-cam"`` with
  ``saliency_layer`` for TorchScript classifiers) and a positive finding, the saliency
  map (:mod:`.saliency`) at the image's size, and in the label map the region that drove it:
  the largest connected part where the map is at least half its maximum. The encoders
  turn the map into a FRACTIONAL SEG and the region into the SR's outline.

A series of several images gets one label per image and label ("Abnormal, image 2").
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ...domain import Code, Evaluation, Measurement, ModelOutput, OutputLabel, Volume
from ...errors import InferenceError
from ...geometry import largest_component
from ..findings.measure import NO_UNITS
from ..manifest import ModelManifest
from ..runner import Device
from .network import WarmNetwork
from .radiograph import scale_radiographs
from .saliency import occlusion_saliency, resize_map

__all__ = ["ABSENT", "PRESENT", "PROBABILITY", "Classified", "ImageClassifier"]

PROBABILITY = Code("122157", "DCM", "Probability")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
#: Where the saliency must reach to count as part of the region that drove a finding.
REGION_LEVEL = 0.5


class Classified(NamedTuple):
    """What :meth:`ImageClassifier.predict` returns: the inputs and their probabilities."""

    inputs: torch.Tensor
    probabilities: torch.Tensor


class ImageClassifier(WarmNetwork):
    """Classifies each image of a series, kept warm after load.

    The network returns logits (N, labels). Subclasses implement :meth:`_load` (once)
    and :meth:`_forward` (per batch).
    """

    def __init__(self, manifest: ModelManifest, device: Device) -> None:
        super().__init__(manifest, device, default_size=224)
        self.threshold = float(manifest.postprocess.get("threshold", 0.5))
        saliency = manifest.postprocess.get("saliency", False)
        self.saliency = "occlusion" if saliency is True else (saliency or "")
        self.saliency_layer = int(manifest.postprocess.get("saliency_layer", -1))
        self.softmax = manifest.postprocess.get("activation", "sigmoid") == "softmax"

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, labels) of a batch at the input size, float32 on the CPU."""
        with torch.inference_mode():
            logits = self._forward(x.to(self.torch_device)).float()
        labels = len(self.manifest.labels)
        if logits.ndim != 2 or logits.shape[1] != labels:
            raise InferenceError(
                f"model {self.manifest.name}: the network returned {tuple(logits.shape)}, "
                f"not (N, {labels}): one logit per label"
            )
        probs = torch.softmax(logits, dim=1) if self.softmax else torch.sigmoid(logits)
        return probs.cpu()

    def saliency_map(self, image: torch.Tensor, label_index: int) -> torch.Tensor:
        """The manifest's saliency method for one image (1, 1, h, w) at the input size."""
        self.load()
        if self.saliency == "grad-cam":
            return self._grad_cam(image, label_index)
        return occlusion_saliency(self.probabilities, image, label_index)

    def _grad_cam(self, image: torch.Tensor, label_index: int) -> torch.Tensor:
        raise InferenceError(
            f"model {self.manifest.name}: runner {self.manifest.runner} has no Grad-CAM; "
            'use saliency = "occlusion"'
        )

    def preprocess(self, volume: Volume) -> torch.Tensor:
        """The images as float32 (N, 1, h, w) at the input size."""
        pixels = torch.from_numpy(np.ascontiguousarray(volume.voxels))
        if self.window is None:
            return scale_radiographs(pixels, self.input_size)
        low, high = self.window
        x = ((pixels - low) / (high - low)).clamp_(0.0, 1.0).unsqueeze(1)
        return F.interpolate(x, size=self.input_size, mode="area")

    def predict(self, inputs: torch.Tensor) -> Classified:
        """Probabilities (N, labels), batch by batch."""
        self.load()
        out = [
            self.probabilities(inputs[i : i + self.batch_size])
            for i in range(0, len(inputs), self.batch_size)
        ]
        return Classified(inputs, torch.cat(out))

    def postprocess(self, prediction: Classified, volume: Volume) -> ModelOutput:
        """Per image and label: probability, presence, and for a positive finding with
        saliency on, the saliency map and the region that drove it."""
        images, rows, cols = volume.voxels.shape
        per_image = images > 1
        label_map = np.zeros((images, rows, cols), np.uint8)
        labels: list[OutputLabel] = []
        measurements: list[Measurement] = []
        evaluations: list[Evaluation] = []
        saliency: dict[int, np.ndarray] = {}
        for n in range(images):
            for k, declared in enumerate(self.manifest.labels):
                value = n * len(self.manifest.labels) + k + 1
                if value > 255:
                    raise InferenceError(
                        f"model {self.manifest.name}: {images} images x "
                        f"{len(self.manifest.labels)} labels exceed 255 result labels"
                    )
                name = f"{declared.name}, image {n + 1}" if per_image else declared.name
                labels.append(dataclasses.replace(declared, value=value, name=name))
                p = float(prediction.probabilities[n, k])
                positive = p >= self.threshold
                measurements.append(Measurement(value, PROBABILITY, round(p, 4), NO_UNITS))
                evaluations.append(
                    Evaluation(value, declared.type, PRESENT if positive else ABSENT)
                )
                if positive and self.saliency:
                    heat = self.saliency_map(prediction.inputs[n : n + 1], k)
                    full = resize_map(heat, (rows, cols)).numpy()
                    if full.max() > 0:
                        region = largest_component(full >= REGION_LEVEL * full.max())
                        label_map[n][region] = value
                        stack = np.zeros((images, rows, cols), np.float32)
                        stack[n] = full
                        saliency[value] = stack
        return ModelOutput(
            labels=tuple(labels),
            label_map=label_map,
            measurements=tuple(measurements),
            evaluations=tuple(evaluations),
            saliency=saliency,
        )
