"""Lesion labels reported one region at a time: 3-D components, rules, sites, measurements."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.domain import Volume
from dicom_ai_node.errors import ConfigError
from dicom_ai_node.geometry import components
from dicom_ai_node.infer.findings.lesions import InstanceRules, segmentation_output
from dicom_ai_node.infer.findings.measure import ATTENUATION, HU, LONG_AXIS, MEAN, ML, VOLUME
from dicom_ai_node.infer.manifest import load_manifest

MODELS = Path(__file__).resolve().parents[2] / "models"


def _reference_components(mask: np.ndarray) -> np.ndarray:
    """26-connected labelling by flood fill, numbered by first voxel in C order."""
    out = np.zeros(mask.shape, int)
    count = 0
    offsets = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    for start in zip(*np.nonzero(mask), strict=True):
        if out[start]:
            continue
        count += 1
        out[start] = count
        stack = [start]
        while stack:
            z, y, x = stack.pop()
            for dz, dy, dx in offsets:
                q = (z + dz, y + dy, x + dx)
                if all(0 <= q[i] < mask.shape[i] for i in range(3)) and mask[q] and not out[q]:
                    out[q] = count
                    stack.append(q)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_match_a_flood_fill(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((14, 22, 26), bool)
    mask[1:13, 2:20, 3:24] = rng.random((12, 18, 21)) > 0.8
    found = components(mask)
    labelled = np.zeros(mask.shape, int)
    for number, (box, local) in enumerate(found, start=1):
        assert local.shape == labelled[box].shape and local.any()
        labelled[box][local] = number
    assert np.array_equal(labelled, _reference_components(mask))


def test_components_of_an_empty_mask_and_corner_contacts() -> None:
    assert components(np.zeros((3, 4, 5), bool)) == []
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal: one 26-connected region
    mask[0, 2, 0] = True  # touches (1, 1, 1) through a corner as well
    [(box, local)] = components(mask)
    assert box == (slice(0, 3), slice(0, 3), slice(0, 3)) and int(local.sum()) == 4


def _ball(
    shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float
) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


@pytest.fixture
def scene() -> tuple[np.ndarray, Volume]:
    """Two lungs (1 right, image left; 2 left) with, as label 3: a large and a small ball
    in the right lung, one ball in the left lung, a speck and a vessel-like tube."""
    shape = (40, 64, 64)
    labels = np.zeros(shape, np.uint8)
    labels[2:38, 8:56, 4:30] = 1
    labels[2:38, 8:56, 34:60] = 2
    labels[_ball(shape, (20, 30, 16), 6)] = 3  # right lung, ~905 voxels
    labels[_ball(shape, (10, 20, 20), 3)] = 3  # right lung, ~123 voxels
    labels[_ball(shape, (25, 30, 46), 4.5)] = 3  # left lung, ~380 voxels
    labels[30, 45, 10] = 3  # a speck: 1 voxel
    labels[3:37, 50:52, 45:47] = 3  # a tube along z: 34 slices of 2 x 2
    values = np.full(shape, -850.0, np.float32)
    values[labels == 3] = 40.0
    volume = Volume(values, (1.0, 1.0, 1.0), (), "", "", "")
    return labels, volume


def _manifest(tmp_path: Path, post: str = "") -> object:
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "model.toml").write_text(
        f"""name = "lesions"
version = "1"
task = "segmentation"
runner = "torchscript"
weights = "model.pt"
[postprocess]
measurements = ["volume"]
{post}
[[labels]]
value = 1
name = "Right lung"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["3341006", "SCT", "Right lung"]
[[labels]]
value = 2
name = "Left lung"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["44029006", "SCT", "Left lung"]
[[labels]]
value = 3
name = "Nodule"
category = ["49755003", "SCT", "Morphologically abnormal structure"]
type = ["27925004", "SCT", "Nodule"]
instances = true
measurements = ["long_axis", "volume", "mean_hu"]
"""
    )
    return load_manifest(tmp_path / "model.toml")


def test_each_nodule_is_a_label_of_its_own_largest_first(
    tmp_path: Path, scene: tuple[np.ndarray, Volume]
) -> None:
    labels, volume = scene
    truth = labels.copy()
    manifest = _manifest(
        tmp_path, "min_instance_mm3 = 50\nmax_instance_elongation = 2.5\nmax_instances = 20"
    )
    out = segmentation_output(manifest, labels, volume)  # type: ignore[arg-type]
    assert out.label_map is labels
    names = [(lab.value, lab.name) for lab in out.labels]
    assert names == [
        (1, "Right lung"),
        (2, "Left lung"),
        (4, "Nodule 1"),
        (5, "Nodule 2"),
        (6, "Nodule 3"),
    ]
    sites = {lab.name: lab.finding_site.meaning for lab in out.labels if lab.finding_site}
    assert sites == {"Nodule 1": "Right lung", "Nodule 2": "Left lung", "Nodule 3": "Right lung"}
    assert all(lab.type.meaning == "Nodule" and not lab.instances for lab in out.labels[2:])
    big = _ball(labels.shape, (20, 30, 16), 6)
    assert np.array_equal(labels == 4, big)
    # the speck and the tube are not reported: they become the lung around them
    assert labels[30, 45, 10] == 1 and (labels[3:37, 50:52, 45:47] == 2).all()
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 4, 5, 6}
    by = {(m.label_value, m.concept): m for m in out.measurements}
    assert by[(4, VOLUME)].value == pytest.approx(float(big.sum()) / 1000)  # 1 mm3 voxels, ml
    assert by[(4, VOLUME)].unit == ML
    assert by[(4, LONG_AXIS)].value == pytest.approx(13.0, abs=1.5)  # a 12-13 mm disc
    mean = by[(4, ATTENUATION)]
    assert mean.value == pytest.approx(40.0) and mean.unit == HU and mean.derivation == MEAN
    # lungs: volume only, measured after the nodules were taken out
    assert by[(1, VOLUME)].value == pytest.approx(float((labels == 1).sum()) / 1000)
    assert (1, LONG_AXIS) not in by and int((truth == 1).sum()) / 1000 < by[(1, VOLUME)].value


def test_limits_on_count_and_size(tmp_path: Path, scene: tuple[np.ndarray, Volume]) -> None:
    labels, volume = scene
    manifest = _manifest(tmp_path, "max_instances = 1")
    out = segmentation_output(manifest, labels, volume)  # type: ignore[arg-type]
    assert [lab.name for lab in out.labels] == ["Right lung", "Left lung", "Nodule 1"]
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 4}
    with pytest.raises(ConfigError, match="postprocess"):
        InstanceRules.from_manifest(_manifest(tmp_path, 'min_instance_mm3 = "big"'))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="out of range"):
        InstanceRules.from_manifest(_manifest(tmp_path, "max_instances = 0"))  # type: ignore[arg-type]


def test_min_instance_mm3_stays_in_mm3_while_volumes_are_reported_in_ml(tmp_path: Path) -> None:
    """A 32 mm3 region passes ``min_instance_mm3 = 30`` and is reported as 0.032 ml; a
    24 mm3 one does not (the threshold compares mm3 with mm3, not with the ml value)."""
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 2:30, 2:30] = 1
    labels[2:6, 4:8, 4:8] = 3  # 64 voxels of 0.5 mm3
    labels[2:5, 20:24, 20:24] = 3  # 48 voxels
    volume = Volume(np.zeros(labels.shape, np.float32), (2.0, 0.5, 0.5), (), "", "", "")
    post = "min_instance_mm3 = 30\nmax_instance_elongation = 10\nmax_instance_flatness = 100"
    out = segmentation_output(_manifest(tmp_path, post), labels, volume)  # type: ignore[arg-type]
    assert [lab.name for lab in out.labels] == ["Right lung", "Left lung", "Nodule 1"]
    by = {(m.label_value, m.concept): m for m in out.measurements}
    assert (by[(4, VOLUME)].value, by[(4, VOLUME)].unit) == (64 * 0.5 / 1000, ML)
    assert labels[3, 21, 21] == 1  # the small one is given to the lung


def test_no_lesion_gives_the_other_labels_only(tmp_path: Path) -> None:
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[1:3, 2:6, 2:6] = 1
    volume = Volume(np.zeros(labels.shape, np.float32), (2.0, 1.0, 1.0), (), "", "", "")
    out = segmentation_output(_manifest(tmp_path), labels, volume)  # type: ignore[arg-type]
    assert [lab.name for lab in out.labels] == ["Right lung", "Left lung"]
    assert [m.value for m in out.measurements] == [0.064, 0.0]  # 64 mm3 in ml


def test_built_in_lung_model_reports_nodules_one_by_one() -> None:
    manifest = load_manifest(MODELS / "ct_chest_lungs" / "model.toml")
    [nodule] = [lab for lab in manifest.labels if lab.instances]
    assert nodule.type.value == "27925004" and nodule.measurements == (
        "long_axis",
        "volume",
        "mean_hu",
    )
    rules = InstanceRules.from_manifest(manifest)
    assert (rules.min_mm3, rules.max_elongation, rules.max_flatness) == (250, 1.2, 5.0)
    # 250 mm3 is a sphere of about 7.8 mm across: the card says "about 8 mm or more"
    assert (6 * rules.min_mm3 / math.pi) ** (1 / 3) == pytest.approx(7.82, abs=0.01)
    assert dataclasses.replace(nodule, instances=False).instances is False


def test_flat_and_elongated_regions_are_not_reported(tmp_path: Path) -> None:
    """A disc on one 5 mm slice 30 mm wide is flat (30 > 5 x 5 mm); a 2 mm wide rod over
    9 slices is elongated ((9 - 1) x 1 mm > 1.2 x 2 mm); a ball passes both."""
    shape = (20, 64, 64)
    labels = np.ones(shape, np.uint8)
    labels[10, 10:40, 10:40][_ball((1, 30, 30), (0, 14.5, 14.5), 15)[0]] = 3  # flat disc
    labels[2:11, 50:52, 50:52] = 3  # rod
    labels[_ball(shape, (15, 50, 20), 4)] = 3  # ball
    volume = Volume(np.zeros(shape, np.float32), (1.0, 1.0, 1.0), (), "", "", "")
    manifest = _manifest(tmp_path, "max_instance_elongation = 1.2\nmax_instance_flatness = 5.0")
    out = segmentation_output(manifest, labels, volume)  # type: ignore[arg-type]
    assert [lab.name for lab in out.labels][2:] == ["Nodule 1"]
    assert np.array_equal(labels == 4, _ball(shape, (15, 50, 20), 4))
    flat_volume = Volume(np.zeros(shape, np.float32), (5.0, 1.0, 1.0), (), "", "", "")
    labels[10, 10:40, 10:40][_ball((1, 30, 30), (0, 14.5, 14.5), 15)[0]] = 3
    out = segmentation_output(manifest, labels, flat_volume)  # type: ignore[arg-type]
    assert labels[10, 25, 25] == 1  # flat at 5 mm slices too: given to the lung
