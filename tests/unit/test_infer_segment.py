"""The slice segmenter's pieces: the argmax over classes and the per-label volumes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.infer.findings.measure import LONG_AXIS, ML, MM, VOLUME, label_measurements
from dicom_ai_node.infer.tasks.segment import SliceSegmenter, SliceStack, label_argmax


def test_label_argmax_is_torch_argmax_with_the_first_maximum_winning_ties() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randint(-3, 4, (4, 5, 33, 17), generator=generator).float()  # many ties
    expected = logits.argmax(dim=1).to(torch.uint8)
    assert torch.equal(label_argmax(logits), expected)
    assert label_argmax(logits).dtype == torch.uint8


def test_label_argmax_of_one_class_is_background() -> None:
    assert not label_argmax(torch.randn(2, 1, 4, 4)).any()


def test_label_argmax_on_channels_last_logits() -> None:
    logits = torch.randn(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert np.array_equal(label_argmax(logits).numpy(), logits.argmax(dim=1).numpy())


def _manifest_with(measurements: list[str]) -> object:
    from dicom_ai_node.infer.manifest import load_manifest

    repo = Path(__file__).resolve().parents[2]
    manifest = load_manifest(repo / "models" / "ct_kidney_tumour" / "model.toml")
    assert manifest.postprocess["measurements"] == measurements
    # the tumour as one label (the shipped manifest reports each tumour on its own,
    # tests/unit/test_infer_lesions.py)
    tumour = dataclasses.replace(
        manifest.labels[1], instances=False, measurements=("volume", "long_axis")
    )
    return dataclasses.replace(manifest, labels=(manifest.labels[0], tumour))


def test_label_measurements_give_volumes_and_the_tumour_long_axis() -> None:
    manifest = _manifest_with(["volume"])
    label_map = np.zeros((5, 64, 64), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    label_map[:, 10:20, 10:20] = 1  # kidney: volume only
    label_map[2][((xx - 40) / 12) ** 2 + ((yy - 40) / 5) ** 2 < 1] = 2  # 24 px wide
    label_map[3][((xx - 40) / 6) ** 2 + ((yy - 40) / 4) ** 2 < 1] = 2
    label_map[3, 0:2, 60:64] = 2  # a second, smaller region on the same slice: not measured
    volume = Volume(
        voxels=np.zeros((5, 64, 64), np.float32),
        spacing_mm=(2.0, 0.5, 0.5),
        sop_instance_uids=tuple(f"2.25.{i}" for i in range(5)),
        frame_of_reference_uid="2.25.9",
        series_instance_uid="2.25.10",
        study_instance_uid="2.25.11",
    )
    found = label_measurements(manifest, label_map, volume)  # type: ignore[arg-type]
    by_kind = {(m.label_value, m.concept.value): m for m in found}
    assert set(by_kind) == {(1, VOLUME.value), (2, VOLUME.value), (2, LONG_AXIS.value)}
    # 500 voxels of 0.5 mm3: 0.25 ml, exact, in UCUM ml
    kidney = by_kind[1, VOLUME.value]
    assert (kidney.value, kidney.unit) == (5 * 100 * 2.0 * 0.25 / 1000, ML)
    long_axis = by_kind[2, LONG_AXIS.value]
    assert long_axis.unit == MM and 11.5 <= long_axis.value <= 12.5, long_axis


def _brain_manifest(tmp_path: Path) -> Path:
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "model.toml").write_text(
        """
name = "brain"
version = "1"
task = "segmentation"
runner = "torchscript"
weights = "w.pt"
[preprocess]
input_size = [32, 32]
intensity = "percentile"
[[postprocess.ratios]]
label = 2
numerator = [2]
denominator = [1]
code = ["VBR", "99DAIN", "Ventricle-to-brain ratio"]
[[labels]]
value = 1
name = "Brain"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["12738006", "SCT", "Brain"]
[[labels]]
value = 2
name = "Ventricles"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["35764002", "SCT", "Cerebral ventricle"]
"""
    )
    return tmp_path / "model.toml"


def test_ratios_are_voxels_over_voxels_in_the_named_group(tmp_path: Path) -> None:
    from dicom_ai_node.infer.findings.measure import NO_UNITS, ratio_measurements
    from dicom_ai_node.infer.manifest import load_manifest

    manifest = load_manifest(_brain_manifest(tmp_path))
    label_map = np.zeros((4, 20, 20), np.uint8)
    label_map[:, 2:18, 2:18] = 1  # 4 x 256 = 1024 voxels, less the ventricles below
    label_map[1:3, 8:12, 8:12] = 2  # 32 voxels
    [ratio] = ratio_measurements(manifest, label_map)
    assert (ratio.label_value, ratio.concept.value, ratio.unit) == (2, "VBR", NO_UNITS)
    assert ratio.value == round(32 / (1024 - 32), 5)
    assert ratio_measurements(manifest, np.zeros_like(label_map)) == ()  # no brain: no ratio


@pytest.mark.parametrize(
    ("ventricle_voxels", "grade"),
    [(0, 0.0), (100, 0.0), (101, 1.0), (300, 1.0), (301, 2.0), (1000, 2.0)],
)
def test_a_graded_ratio_adds_one_grade_per_edge_it_falls_below(
    tmp_path: Path, ventricle_voxels: int, grade: float
) -> None:
    """Edges 0.9 and 0.75 of "brain / (brain + ventricles)" with 900 brain voxels:
    100 ventricle voxels give exactly 0.9 (grade 0: at an edge is not below it)."""
    from dicom_ai_node.infer.findings.measure import NO_UNITS, ratio_measurements
    from dicom_ai_node.infer.manifest import load_manifest

    path = _brain_manifest(tmp_path)
    path.write_text(
        path.read_text().replace(
            "numerator = [2]\ndenominator = [1]\n"
            'code = ["VBR", "99DAIN", "Ventricle-to-brain ratio"]',
            'numerator = [1]\ndenominator = [1, 2]\ncode = ["OCC", "99X", "Occupancy"]\n'
            'grades = { code = ["GRADE", "99X", "Grade"], below = [0.9, 0.75] }',
        )
    )
    manifest = load_manifest(path)
    label_map = np.zeros(2000, np.uint8)
    label_map[:900] = 1
    label_map[900 : 900 + ventricle_voxels] = 2
    ratio, graded = ratio_measurements(manifest, label_map)
    assert (ratio.concept.value, graded.concept.value) == ("OCC", "GRADE")
    assert ratio.value == round(900 / (900 + ventricle_voxels), 5)
    assert (graded.label_value, graded.value, graded.unit) == (2, grade, NO_UNITS)


def test_percentile_intensity_makes_the_input_independent_of_the_scanner_gain(
    tmp_path: Path,
) -> None:
    from dicom_ai_node.infer.manifest import load_manifest
    from dicom_ai_node.infer.runner import Device
    from dicom_ai_node.infer.tasks.segment import SliceSegmenter

    segmenter = SliceSegmenter(load_manifest(_brain_manifest(tmp_path)), Device())
    rng = np.random.default_rng(0)
    voxels = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
    base = Volume(voxels, (3.0, 1.0, 1.0), ("1", "2", "3"), "4", "5", "6")
    x = segmenter.preprocess(base)
    y = segmenter.preprocess(dataclasses.replace(base, voxels=voxels * 2500.0 + 40.0))
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_a_slice_stack_gives_each_slice_its_neighbours_repeating_the_ends() -> None:
    slices = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1).expand(6, 1, 2, 2)
    batch = SliceStack(slices, offset=2).batch(0, 4)
    assert batch.shape == (4, 3, 2, 2)
    assert batch[:, :, 0, 0].tolist() == [[0, 0, 2], [0, 1, 3], [0, 2, 4], [1, 3, 5]]
    assert SliceStack(slices, offset=2).batch(4, 8)[:, :, 0, 0].tolist() == [[2, 4, 5], [3, 5, 5]]


class _Recorder(SliceSegmenter):
    """The segmenter with a stand-in network that keeps what it was given."""

    seen: list[torch.Tensor]

    def _load(self) -> None:
        self.seen = []

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros((x.shape[0], 1 + len(self.manifest.labels), *x.shape[-2:]))


def test_context_mm_feeds_the_network_each_slice_with_the_slices_that_far_away(
    tmp_path: Path,
) -> None:
    """A 2.5-D model (``preprocess.context_mm = 3``) on 1.5 mm slices: the neighbours are
    two slices away, in batches, at the network's input size."""
    from dicom_ai_node.infer.manifest import load_manifest
    from dicom_ai_node.infer.runner import Device

    path = _brain_manifest(tmp_path)
    path.write_text(path.read_text().replace('intensity = "percentile"', "context_mm = 3.0"))
    runner = _Recorder(load_manifest(path), Device())
    runner.batch_size = 4
    voxels = np.repeat(np.arange(7, dtype=np.float32)[:, None, None], 40, 1).repeat(40, 2)
    volume = Volume(voxels, (1.5, 1.0, 1.0), tuple(str(k) for k in range(7)), "f", "s", "t")
    stack = runner.preprocess(volume)
    assert isinstance(stack, SliceStack) and stack.offset == 2
    labels = runner.predict(stack)
    assert labels.shape == (7, 40, 40)
    assert [tuple(x.shape) for x in runner.seen] == [(4, 3, 32, 32), (3, 3, 32, 32)]
    seen = torch.cat(runner.seen)[:, :, 0, 0]
    assert seen.tolist() == [[max(k - 2, 0), k, min(k + 2, 6)] for k in range(7)]
    (tmp_path / "plain").mkdir()
    plain = SliceSegmenter(load_manifest(_brain_manifest(tmp_path / "plain")), Device())
    assert isinstance(plain.preprocess(volume), torch.Tensor)  # a 2-D model: no stack
