"""Bring-your-own models in each format the node runs, made in the test (docs/models.md).

Each is the same tiny network, so that its output is known exactly: one label, "Lung",
given to every voxel darker than -500 HU (air and lung), as a 1x1 convolution whose
background logit is 0 and whose label logit is ``-HU - 500`` (exact in float32: a voxel of
exactly -500 HU ties and argmax picks the background). The MONAI bundle windows its
input to 0..1 over [-1000, 0] HU first, so its logit is ``0.5 - x``: the same threshold.
These are fixtures for the plumbing, not models of anything.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import torch

FORMATS = ("torchscript", "onnx", "monai-bundle", "python")
THRESHOLD_HU = -500.0

_LABEL = """
[[labels]]
value = 1
name = "Lung"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["39607008", "SCT", "Lung"]
color = [80, 150, 220]
"""


def _manifest(name: str, runner: str, weights: str, size: int, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
            name = "{name}"
            version = "0.1.0"
            task = "segmentation"
            runner = "{runner}"
            weights = "{weights}"
            description = "Test fixture: voxels darker than -500 HU ({runner})."
            intended_use = "Tests of the node's model formats only. Not for clinical use."
            {extra}
            [input]
            modalities = ["CT"]
            body_parts = ["CHEST"]
            sop_class_uids = ["1.2.840.10008.5.1.4.1.1.2"]
            min_slices = 10
            require_axial = true
            require_original = true
            require_pixel_spacing = true

            [preprocess]
            input_size = [{size}, {size}]
            batch_size = 8

            [postprocess]
            measurements = ["volume"]
            """
        )
        + _LABEL
    )


def conv(dims: int, weight: float, bias: float) -> torch.nn.Module:
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1] = weight
        conv.bias[1] = bias
    return conv.eval()


def make_model(kind: str, folder: Path, size: int) -> Path:
    """Write a model folder of format ``kind`` (one of :data:`FORMATS`) for slices of
    ``size`` x ``size``; returns the folder."""
    name = f"byo-{kind}"
    folder.mkdir(parents=True)
    if kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            torch.jit.save(torch.jit.script(conv(2, -1.0, -500.0)), folder / "model.pt")
        manifest = _manifest(name, "torchscript", "model.pt", size)
    elif kind == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                conv(2, -1.0, -500.0),
                (torch.zeros(2, 1, size, size),),
                str(folder / "model.onnx"),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
            )
        manifest = _manifest(name, "onnx", "model.onnx", size)
    elif kind == "monai-bundle":
        bundle = folder / "bundle"
        (bundle / "configs").mkdir(parents=True)
        (bundle / "models").mkdir()
        torch.save(conv(3, -1.0, 0.5).state_dict(), bundle / "models" / "model.pt")
        image = {"type": "image", "format": "hounsfield", "num_channels": 1}
        metadata = {
            "version": "0.1.0",
            "name": name,
            "network_data_format": {
                "inputs": {"image": {**image, "spatial_shape": [32, 32, 16], "dtype": "float32"}},
                "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2}},
            },
        }
        inference = {
            "network_def": {
                "_target_": "torch.nn.Conv3d",
                "in_channels": 1,
                "out_channels": 2,
                "kernel_size": 1,
            },
            "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16]},
        }
        (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
        (bundle / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
        manifest = _manifest(name, "monai-bundle", "bundle", size).replace(
            "batch_size = 8", "batch_size = 4\nintensity_range = [-1000, 0]\noverlap = 0.5"
        )
    elif kind == "python":
        (folder / "threshold.py").write_text(PYTHON_RUNNER)
        (folder / "threshold.json").write_text(json.dumps({"below_hu": THRESHOLD_HU}))
        manifest = _manifest(
            name, "python", "threshold.json", size, 'entry_point = "threshold:make_runner"'
        )
    else:
        raise ValueError(kind)
    (folder / "model.toml").write_text(manifest)
    return folder


#: A runner written in Python: numpy only, weights a JSON file (docs/models.md).
PYTHON_RUNNER = '''\
"""A Python runner: the four methods of the runner protocol, numpy only."""

import json

import numpy as np

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.infer.findings.measure import label_measurements


class ThresholdRunner:
    def __init__(self, manifest, device):
        self.manifest = manifest
        self.below_hu = None

    def load(self):
        self.below_hu = json.loads(self.manifest.weights_path.read_text())["below_hu"]

    def preprocess(self, volume):
        return volume.voxels

    def predict(self, voxels):
        return (voxels < self.below_hu).astype(np.uint8)

    def postprocess(self, label_map, volume):
        return ModelOutput(
            labels=self.manifest.labels,
            label_map=label_map,
            measurements=label_measurements(self.manifest, label_map, volume),
        )


def make_runner(manifest, device):
    return ThresholdRunner(manifest, device)
'''
