"""The brain-extraction task: orientation to RAS and back, deepbet's steps around the
networks (with stand-in networks), and the labels and measurements in the source geometry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.infer.findings.tissue import csf_threshold, split_csf
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.tasks.brain import BrainExtractor, bounding_box, keep_largest_filled
from dicom_ai_node.infer.tasks.orient import axis_directions_ras, closest_canonical

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "models" / "mr_brain_extraction" / "model.toml"


def _rotated(iop: tuple[float, ...], degrees: float, axis: int) -> tuple[float, ...]:
    """``iop`` with both direction cosines turned ``degrees`` about a patient axis."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    turn = np.eye(3)
    turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
    row, column = turn @ np.array(iop[:3]), turn @ np.array(iop[3:])
    return (*row.tolist(), *column.tolist())


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
ORIENTATIONS = {
    "axial": AXIAL,
    "axial-flipped": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "sagittal": SAGITTAL,
    "coronal": CORONAL,
    "oblique-axial": _rotated(AXIAL, 25.0, 0),
    "oblique-sagittal": _rotated(SAGITTAL, -30.0, 1),
    "oblique-coronal": _rotated(CORONAL, 20.0, 2),
}


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_to_canonical_and_back_is_exact(name: str) -> None:
    rng = np.random.default_rng(1)
    voxels = rng.random((5, 7, 9)).astype(np.float32)  # every axis a different length
    canonical = closest_canonical(ORIENTATIONS[name])
    turned = canonical.to_canonical(voxels)
    assert turned.shape == canonical.shape(voxels.shape)
    assert np.array_equal(canonical.from_canonical(turned), voxels)


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_canonical_order_is_nibabels_closest_canonical(name: str) -> None:
    nibabel = pytest.importorskip("nibabel")
    rng = np.random.default_rng(2)
    voxels = rng.random((5, 7, 9)).astype(np.float32)
    spacing = np.array([2.0, 0.9, 0.8])
    affine = np.eye(4)
    affine[:3, :3] = axis_directions_ras(ORIENTATIONS[name]) * spacing
    image = nibabel.as_closest_canonical(nibabel.Nifti1Image(voxels, affine))
    expected = image.get_fdata(dtype=np.float32)
    assert np.array_equal(closest_canonical(ORIENTATIONS[name]).to_canonical(voxels), expected)


@pytest.mark.parametrize("name", ["axial", "sagittal", "coronal", "oblique-sagittal"])
def test_canonical_axes_point_right_anterior_superior(name: str) -> None:
    canonical = closest_canonical(ORIENTATIONS[name])
    directions = axis_directions_ras(ORIENTATIONS[name])
    for world in range(3):
        axis = directions[:, canonical.axes[world]]
        sign = -1.0 if canonical.flips[world] else 1.0
        assert sign * axis[world] == pytest.approx(np.abs(axis).max())


def test_no_orientation_is_taken_as_axial() -> None:
    assert closest_canonical(None) == closest_canonical(AXIAL)


class StandInExtractor(BrainExtractor):
    """deepbet's steps with stand-in networks: anything brighter than the background is
    brain, and the brain network keeps only the patient's right half of its box (array
    axis 0 of the canonical input points to the right)."""

    calls: list[tuple[str, tuple[int, ...]]]

    def _load(self) -> None:
        self.calls = []

    def _forward(self, network: str, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((network, tuple(x.shape)))
        brain = (x > x.amin() + 0.05).float()
        if network == "brain":
            brain[:, :, : x.shape[2] // 2] = 0
        return torch.cat([1 - brain, brain], dim=1)


def _head(orientation: tuple[float, ...]) -> tuple[Volume, np.ndarray, np.ndarray]:
    """A head off centre in a (48, 40, 44) volume: white matter 100, a grey rim 60, a
    ventricle 20; returns the volume, the head mask and each voxel's RAS x coordinate."""
    shape = (48, 40, 44)
    spacing = (1.2, 1.0, 1.1)
    directions = axis_directions_ras(orientation)
    index = np.indices(shape).reshape(3, -1).T * np.array(spacing)
    world = (index @ directions.T).reshape(*shape, 3)
    centre = world.reshape(-1, 3).mean(axis=0) + np.array([3.0, -2.0, 4.0])
    r = np.linalg.norm((world - centre) / np.array([16.0, 19.0, 15.0]), axis=-1)
    ventricle = np.linalg.norm((world - centre - [4.0, 0, 0]) / np.array([4.0, 7.0, 4.0]), axis=-1)
    voxels = np.where(r < 1, np.where(r < 0.8, 100.0, 60.0), 0.0).astype(np.float32)
    voxels[ventricle < 1] = 20.0
    volume = Volume(
        voxels,
        spacing,
        ("1",),
        "1.2.3",
        "1.2.3.4",
        "1.2.3.5",
        image_orientation_patient=orientation,
    )
    return volume, r < 1, world[..., 0] - centre[0]


@pytest.mark.parametrize("name", ["axial", "sagittal", "coronal", "oblique-coronal"])
def test_the_mask_comes_back_in_the_source_geometry(name: str) -> None:
    manifest = load_manifest(MANIFEST)
    runner = StandInExtractor(manifest, Device("cpu", threads=1))
    volume, head, right = _head(ORIENTATIONS[name])
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    assert [c[0] for c in runner.calls] == ["bbox", "brain"]
    assert runner.calls[0][1] == (1, 1, 128, 128, 128)
    assert runner.calls[1][1] == (1, 1, 256, 256, 256)
    assert output.label_map is not None and output.label_map.shape == volume.voxels.shape
    mask = output.label_map > 0
    expected = head & (right > 0)  # the right half of the head, where the patient's right is
    overlap = 2 * np.count_nonzero(mask & expected) / (mask.sum() + expected.sum())
    # an oblique series' half is cut along its own axis, tilted 20 degrees from the x axis
    oblique = name.startswith("oblique")
    assert overlap > (0.8 if oblique else 0.9), overlap
    assert np.count_nonzero(mask & (right < (-8 if oblique else -3))) == 0  # not the left side


def test_labels_and_measurements_agree_with_the_label_map() -> None:
    manifest = load_manifest(MANIFEST)
    runner = StandInExtractor(manifest, Device("cpu", threads=1))
    volume, _, _ = _head(SAGITTAL)
    output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    label_map = output.label_map
    assert label_map is not None
    assert [label.name for label in output.labels] == ["Brain parenchyma", "Intracranial CSF"]
    # the CSF label is the ventricle (intensity 20), inside the mask only
    assert np.all(volume.voxels[label_map == 2] == 20.0)
    assert np.all(volume.voxels[label_map == 1] >= 60.0)
    ml = volume.voxel_volume_mm3 / 1000
    parenchyma = np.count_nonzero(label_map == 1) * ml
    csf = np.count_nonzero(label_map == 2) * ml
    got = {(m.label_value, m.concept.value): m for m in output.measurements}
    assert got[(1, "118565006")].value == pytest.approx(parenchyma)
    assert got[(2, "118565006")].value == pytest.approx(csf)
    tiv = got[(1, "TIV")]
    assert (tiv.value, tiv.unit.value) == (pytest.approx(parenchyma + csf), "ml")
    assert (tiv.concept.scheme_designator, tiv.concept.meaning) == (
        "99DAIN",
        "Total intracranial volume",
    )
    bpf = got[(1, "BPF")]
    assert bpf.value == pytest.approx(parenchyma / (parenchyma + csf), abs=1e-5)
    assert bpf.unit.value == "1" and 0 < bpf.value < 1


def test_csf_threshold_separates_the_darkest_of_three_classes() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(30, 4, 2000), rng.normal(80, 5, 5000), rng.normal(120, 5, 6000)]
    ).astype(np.float32)
    threshold = csf_threshold(values)
    assert 40 < threshold < 70
    mask = np.ones(values.shape, bool)
    labels = split_csf(mask, values)
    assert abs(np.count_nonzero(labels == 2) - 2000) < 40


def test_an_empty_mask_gives_no_labels() -> None:
    empty = np.zeros((4, 4, 4), bool)
    assert not split_csf(empty, np.zeros((4, 4, 4), np.float32)).any()
    assert not keep_largest_filled(empty, fill=True).any()


def test_largest_part_kept_and_voids_filled() -> None:
    mask = np.zeros((12, 12, 12), bool)
    mask[1:9, 1:9, 1:9] = True
    mask[4, 4, 4] = False  # a void inside
    mask[11, 11, 11] = True  # a speck apart
    out = keep_largest_filled(mask, fill=True)
    assert out[4, 4, 4] and not out[11, 11, 11]
    assert np.count_nonzero(out) == 8**3


def test_bounding_box_as_deepbet_computes_it() -> None:
    small = torch.zeros((128, 128, 128))
    small[32:96, 40:80, 20:100] = 1.0
    box = bounding_box(small, (181, 217, 181))
    # centre (64, 60, 60) and size (64, 40, 80) scaled to the volume, 10 % margin a side
    expected = []
    for centre, size, n in zip((64, 60, 60), (64, 40, 80), (181, 217, 181), strict=True):
        c = np.float32(centre * n / 128)
        s = np.float32(1.2) * np.float32(size * n / 128)
        c, s = float(np.round(c)), float(np.round(s))
        expected.append(slice(max(0, int(c - s / 2)), min(n, int(c + s / 2))))
    assert box == tuple(expected)


def test_no_brain_in_the_box_is_an_inference_error() -> None:
    from dicom_ai_node.errors import InferenceError

    with pytest.raises(InferenceError, match="no brain"):
        bounding_box(torch.zeros((128, 128, 128)), (100, 100, 100))


def test_load_volume_keeps_the_series_orientation() -> None:
    from dicom_ai_node.infer.volume import load_volume
    from dicom_ai_node.testing.series import make_ct_series

    _, series = make_ct_series(4, 16, 16, seed=2)
    for ds in series:
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
        ds.ImagePositionPatient = [float(ds.InstanceNumber) * 2.5, 0.0, 0.0]
    volume, _, _ = load_volume(series)
    assert volume is not None
    assert volume.image_orientation_patient == (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
