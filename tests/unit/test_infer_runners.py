"""Runner paths the end-to-end tests do not take: an ONNX graph with a fixed batch axis, a
2-D MONAI bundle shipping TorchScript, and the errors a broken bundle or graph gives."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.errors import ConfigError, InferenceError
from dicom_ai_node.infer.install import trial_volume, try_model
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.runner import BUILTIN_RUNNERS, Device, make_runner

from ..byo_models import conv, make_model

SIZE = 32
DEVICE = Device("cpu", 1, False)


def _expected(folder: Path, windowed: bool = False) -> np.ndarray:
    """The threshold every fixture model applies, on the trial volume at SIZE x SIZE
    (after the bundle's window to 0..1 over [-1000, 0] HU when ``windowed``)."""
    volume = trial_volume(load_manifest(folder / "model.toml").input)
    x = torch.from_numpy(volume.voxels).unsqueeze(1)
    if windowed:
        x = ((x + 1000.0) / 1000.0).clamp(0.0, 1.0)
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="area")
    label = 0.5 - x if windowed else -x - 500.0
    logits = torch.cat([torch.zeros_like(x), label], dim=1)
    up = torch.nn.functional.interpolate(logits, size=volume.voxels.shape[1:], mode="bilinear")
    return up.argmax(dim=1).to(torch.uint8).numpy()


def test_each_built_in_runner_of_the_name_table_imports() -> None:
    """The table names its runners as text (imported when a manifest names one): each
    entry must still point at a factory in the infer stage."""
    assert set(BUILTIN_RUNNERS) == {"torchscript", "onnx", "monai-bundle", "python"}
    for entry in BUILTIN_RUNNERS.values():
        module, _, attribute = entry.partition(":")
        assert module.startswith("dicom_ai_node.infer.runners."), entry
        assert callable(getattr(importlib.import_module(module), attribute)), entry


def test_an_onnx_graph_with_a_fixed_batch_runs_padded_batches(tmp_path: Path) -> None:
    folder = make_model("onnx", tmp_path / "onnx", SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(  # batch of 3, no dynamic axes: 16 trial slices = 5 full + 1 padded
            conv(2, -1.0, -500.0),
            (torch.zeros(3, 1, SIZE, SIZE),),
            str(folder / "model.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
        )
    trial = try_model(folder, DEVICE)
    assert trial.output.label_map is not None
    assert np.array_equal(trial.output.label_map, _expected(folder))


def test_a_2d_monai_bundle_with_torchscript_runs_slice_by_slice(tmp_path: Path) -> None:
    folder = make_model("monai-bundle", tmp_path / "bundle", SIZE)
    bundle = folder / "bundle"
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] = [SIZE, SIZE]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (bundle / "models" / "model.pt").unlink()  # model.ts is used; no MONAI parser needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(conv(2, -1.0, 0.5)), str(bundle / "models" / "model.ts"))
    trial = try_model(folder, DEVICE)
    assert trial.output.label_map is not None
    assert np.array_equal(trial.output.label_map, _expected(folder, windowed=True))


def test_a_bundle_without_a_spatial_shape_is_a_configuration_error(tmp_path: Path) -> None:
    folder = make_model("monai-bundle", tmp_path / "bundle", SIZE)
    (folder / "bundle" / "configs" / "metadata.json").write_text(json.dumps({"version": "1"}))
    with pytest.raises(ConfigError, match="spatial_shape"):
        make_runner(load_manifest(folder / "model.toml"), DEVICE)


def test_a_graph_with_the_wrong_number_of_outputs_is_refused(tmp_path: Path) -> None:
    folder = make_model("onnx", tmp_path / "onnx", SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.nn.Conv2d(1, 4, 1),  # four channels for one label
            (torch.zeros(2, 1, SIZE, SIZE),),
            str(folder / "model.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
        )
    with pytest.raises(InferenceError, match=r"not \(N, 2, H, W\)"):
        try_model(folder, DEVICE)
