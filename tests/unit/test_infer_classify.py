"""Infer: the image classifier (probabilities, presence, occlusion saliency and the region
that drove a finding), projection radiograph loading, and their encoding."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import dcmread
from pydicom.dataset import Dataset
from torch import Tensor, nn

from dicom_ai_node.domain import Volume
from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.errors import InferenceError
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.runner import Device, make_runner
from dicom_ai_node.infer.tasks.classify import ABSENT, PRESENT, PROBABILITY, ImageClassifier
from dicom_ai_node.infer.tasks.saliency import occlusion_saliency
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.images import radiograph_to_dataset
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph

MANIFEST = """
name = "corner"
version = "1.0"
task = "classification"
runner = "torchscript"
weights = "model.pt"
[input]
modalities = ["CR"]
[preprocess]
geometry = "projection"
input_size = [64, 64]
[postprocess]
threshold = 0.5
saliency = true
[[labels]]
value = 1
name = "Bright corner"
category = ["404684003", "SCT", "Clinical finding"]
type = ["263654008", "SCT", "Abnormal"]
"""


class Corner(nn.Module):
    """Abnormal when the top-left quarter of the image is bright: a known answer."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        return (x[:, :, :h, :w].mean(dim=(2, 3)) * 40.0 - 4.0).reshape(-1, 1)


@pytest.fixture
def classifier(tmp_path: Path) -> ImageClassifier:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Corner()), str(tmp_path / "model.pt"))
    (tmp_path / "model.toml").write_text(MANIFEST)
    runner = make_runner(load_manifest(tmp_path / "model.toml"), Device("cpu", bf16=False))
    assert isinstance(runner, ImageClassifier)
    return runner


def _volume(*images: np.ndarray) -> Volume:
    return Volume(
        voxels=np.stack(images).astype(np.float32),
        spacing_mm=(1.0, 0.5, 0.5),
        sop_instance_uids=tuple(f"2.25.{k + 1}" for k in range(len(images))),
        frame_of_reference_uid="",
        series_instance_uid="2.25.100",
        study_instance_uid="2.25.101",
    )


def _image(bright: bool) -> np.ndarray:
    image = np.full((128, 128), 100.0, np.float32)
    image[60:100, 70:110] = 900.0  # something else, away from the corner
    if bright:
        image[4:28, 6:30] = 1000.0
    return image


def test_a_positive_image_gets_probability_presence_saliency_and_region(
    classifier: ImageClassifier,
) -> None:
    volume = _volume(_image(True))
    output = classifier.postprocess(classifier.predict(classifier.preprocess(volume)), volume)
    [label] = output.labels
    [measurement] = output.measurements
    assert measurement.concept == PROBABILITY and measurement.value > 0.9
    assert [(e.concept, e.value) for e in output.evaluations] == [(label.type, PRESENT)]
    heat = output.saliency[1][0]
    assert heat.shape == (128, 128) and heat.max() == pytest.approx(1.0)
    r, c = np.unravel_index(int(heat.argmax()), heat.shape)
    assert r < 40 and c < 40, (r, c)  # the corner drove it, not the other bright block
    assert output.label_map is not None
    rows, cols = np.nonzero(output.label_map[0] == 1)
    assert rows.size and rows.max() < 48 and cols.max() < 48
    assert heat[60:100, 70:110].max() < 0.2


def test_a_negative_image_gets_absent_and_no_saliency(classifier: ImageClassifier) -> None:
    volume = _volume(_image(False))
    output = classifier.postprocess(classifier.predict(classifier.preprocess(volume)), volume)
    assert output.measurements[0].value < 0.1
    assert output.evaluations[0].value == ABSENT
    assert output.saliency == {}
    assert output.label_map is not None and not output.label_map.any()


def test_each_image_of_a_series_gets_its_own_label(classifier: ImageClassifier) -> None:
    volume = _volume(_image(False), _image(True))
    output = classifier.postprocess(classifier.predict(classifier.preprocess(volume)), volume)
    assert [(x.value, x.name) for x in output.labels] == [
        (1, "Bright corner, image 1"),
        (2, "Bright corner, image 2"),
    ]
    assert [e.value for e in output.evaluations] == [ABSENT, PRESENT]
    assert set(output.saliency) == {2} and not output.saliency[2][0].any()
    assert output.label_map is not None and set(np.unique(output.label_map[1])) == {0, 2}


def test_occlusion_saliency_is_zero_when_nothing_lowers_the_probability() -> None:
    heat = occlusion_saliency(lambda x: torch.full((len(x), 1), 0.7), torch.rand(1, 1, 32, 32), 0)
    assert heat.shape == (32, 32) and not heat.any()


def _cr(monochrome1: bool, spacing: float | None = 0.35) -> Dataset:
    ph = chest_radiograph(96, np.random.default_rng(1), "nodule")
    ds = radiograph_to_dataset(ph, monochrome1=monochrome1, pixel_spacing_mm=spacing)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_projection_loading_inverts_monochrome1_and_needs_no_geometry() -> None:
    plain, _, issues = load_volume([_cr(False)], projection=True)
    inverted, _, more = load_volume([_cr(True, spacing=None)], projection=True)
    assert issues == () and more == ()
    assert plain is not None and inverted is not None
    np.testing.assert_allclose(plain.voxels, inverted.voxels)  # dense is bright on both
    assert plain.spacing_mm == (1.0, 0.35, 0.35) and inverted.spacing_mm == (1.0, 1.0, 1.0)
    # as a volume, one radiograph fails the slice checks: the manifest must say projection
    _, _, blocking = load_volume([_cr(False)])
    assert any(i.check == "geometry" for i in blocking)


def test_encoding_a_positive_radiograph_gives_a_fractional_seg_and_an_sr(
    classifier: ImageClassifier,
) -> None:
    source = _cr(True, spacing=None)
    volume, ordered, _ = load_volume([source], projection=True)
    assert volume is not None
    volume = _volume(_image(True)[:96, :96])  # the corner model's own answer, CR's shape
    output = classifier.postprocess(classifier.predict(classifier.preprocess(volume)), volume)
    algorithm = classifier.manifest.algorithm(device_uid("corner", "1.0"))
    seg, sr = encode_results(ordered, output, algorithm, "job-cr")
    assert seg.SegmentationType == "FRACTIONAL" and seg.MaximumFractionalValue == 255
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "130404"
    assert list(seg.PatientOrientation) == ["L", "F"]  # no Frame of Reference: Type 2C
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]
    group = sr.ContentSequence[-1].ContentSequence[0].ContentSequence
    kinds = {item.ValueType for item in group}
    assert {"SCOORD", "NUM", "CODE"} <= kinds
    negative = _volume(_image(False)[:96, :96])
    out = classifier.postprocess(classifier.predict(classifier.preprocess(negative)), negative)
    [findings] = encode_results(ordered, out, algorithm, "job-cr-negative")
    assert findings.SeriesDescription.endswith("findings SR")


class Quarter(nn.Module):
    """Keeps the top-left quarter of the image, zero elsewhere."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // 4, x.shape[-1] // 4
        corner = torch.zeros_like(x)
        corner[:, :, :h, :w] = x[:, :, :h, :w]
        return corner


class CornerCam(nn.Module):
    """``features`` + ``head`` on their spatial mean, as Grad-CAM needs; the features are
    the image's top-left quarter, so that is all that can raise the score."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Quarter(), nn.ReLU())
        self.head = nn.Linear(1, 1)
        with torch.no_grad():
            self.head.weight.fill_(400.0)
            self.head.bias.fill_(-4.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_points_at_what_raised_the_score(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(CornerCam()), str(tmp_path / "model.pt"))
    text = MANIFEST.replace("saliency = true", 'saliency = "grad-cam"\nsaliency_layer = 1')
    (tmp_path / "model.toml").write_text(text)
    runner = make_runner(load_manifest(tmp_path / "model.toml"), Device("cpu", bf16=False))
    assert isinstance(runner, ImageClassifier)
    volume = _volume(_image(True))
    x = runner.preprocess(volume)
    heat = runner.saliency_map(x, 0)
    r, c = np.unravel_index(int(heat.argmax()), heat.shape)
    assert r < 16 and c < 16 and heat[20:, 20:].max() == 0  # the corner, nothing else


def test_grad_cam_of_a_network_without_its_layers_is_a_clear_error(
    tmp_path: Path, classifier: ImageClassifier
) -> None:
    (tmp_path / "model.toml").write_text(
        MANIFEST.replace("saliency = true", 'saliency = "grad-cam"\nsaliency_layer = 0')
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Corner()), str(tmp_path / "model.pt"))
    runner = make_runner(load_manifest(tmp_path / "model.toml"), Device("cpu", bf16=False))
    assert isinstance(runner, ImageClassifier)
    runner.load()
    with pytest.raises(InferenceError, match="Grad-CAM needs a module with `features` and `head`"):
        runner.saliency_map(runner.preprocess(_volume(_image(True))), 0)


def test_an_onnx_classifier_gives_the_same_answer_and_saliency(
    tmp_path: Path, classifier: ImageClassifier
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    folder = tmp_path / "onnx"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            Corner(),
            (torch.zeros(2, 1, 64, 64),),
            str(folder / "model.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
        )
    text = MANIFEST.replace('runner = "torchscript"', 'runner = "onnx"')
    (folder / "model.toml").write_text(text.replace('"model.pt"', '"model.onnx"'))
    runner = make_runner(load_manifest(folder / "model.toml"), Device("cpu", bf16=False))
    assert isinstance(runner, ImageClassifier) and type(runner).__name__ == "OnnxClassifier"
    volume = _volume(_image(True))
    onnx_out = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    torch_out = classifier.postprocess(classifier.predict(classifier.preprocess(volume)), volume)
    assert onnx_out.measurements[0].value == pytest.approx(
        torch_out.measurements[0].value, abs=1e-3
    )
    assert onnx_out.evaluations == torch_out.evaluations
    np.testing.assert_allclose(onnx_out.saliency[1], torch_out.saliency[1], atol=1e-3)
