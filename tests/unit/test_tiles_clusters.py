"""Sliding-window inference (infer/tasks/tiles.py) and point-cluster post-processing
(infer/findings/clusters.py): tiles cover every pixel whatever the image size, resampling keeps
the physical size, and specks are grouped by single linkage into clusters with counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_ai_node.domain import Volume
from dicom_ai_node.errors import ConfigError
from dicom_ai_node.infer.findings.clusters import (
    CALCIFICATION_COUNT,
    ClusterRules,
    cluster_output,
    single_linkage,
)
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.tasks.tiles import resample, sliding_window


@pytest.mark.parametrize("shape", [(1, 1, 50, 70), (1, 1, 300, 260), (1, 1, 128, 128)])
def test_sliding_window_covers_every_pixel_once_on_average(shape: tuple[int, ...]) -> None:
    """A network that returns its input tile reproduces the image exactly (the overlap
    average of identical values), padded or not, and sees only tiles of its size."""
    image = torch.rand(shape)
    seen: list[tuple[int, ...]] = []

    def network(tiles: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(tiles.shape[-2:]))
        return torch.cat([tiles, -tiles], dim=1)

    logits = sliding_window(network, image, (128, 128), overlap=0.25, batch_size=3)
    assert logits.shape == (1, 2, *shape[-2:])
    assert torch.allclose(logits[:, :1], image, atol=1e-6)
    assert set(seen) == {(128, 128)}


def test_resample_keeps_the_physical_size() -> None:
    x = torch.rand(2, 1, 100, 80)
    assert resample(x, (0.07, 0.07), 0.1).shape == (2, 1, 70, 56)
    assert resample(x, (0.2, 0.1), 0.1).shape == (2, 1, 200, 80)
    assert resample(x, (0.1, 0.1), 0.1) is x


def test_single_linkage_chains_close_points() -> None:
    points = np.array([[0.0, 0.0], [0.0, 4.0], [0.0, 8.0], [0.0, 20.0], [30.0, 30.0]])
    assert single_linkage(points, 4.5) == [[0, 1, 2], [3], [4]]
    assert single_linkage(np.zeros((0, 2)), 5.0) == []


def _manifest(tmp_path: Path, clusters: str) -> object:
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "model.toml").write_text(
        f"""name = "mg"
version = "1"
task = "segmentation"
runner = "torchscript"
weights = "model.pt"
[preprocess]
geometry = "projection"
tile = true
pixel_mm = 0.1
[postprocess.clusters]
{clusters}
[[labels]]
value = 1
name = "Calcifications"
category = ["49755003", "SCT", "Morphologically abnormal structure"]
type = ["309587003", "SCT", "Calcification of breast"]
"""
    )
    return load_manifest(tmp_path / "model.toml")


def test_specks_become_clusters_with_counts(tmp_path: Path) -> None:
    """Five specks within 2 mm of each other: one cluster of 5, outlined around them;
    two specks far apart: not a cluster; the specks keep their label."""
    manifest = _manifest(
        tmp_path,
        'label = 1\nname = "Cluster"\ntype = ["129769006", "SCT", "Calcification Cluster"]\n'
        "distance_mm = 3.0\nmin_count = 3",
    )
    rules = ClusterRules.from_manifest(manifest)  # type: ignore[arg-type]
    assert rules is not None and rules.distance_mm == 3.0
    labels = np.zeros((1, 200, 200), np.uint8)
    group = [(50, 50), (52, 60), (60, 55), (65, 65), (55, 70)]  # 0.1 mm pixels: 2 mm apart
    for r, c in [*group, (150, 20), (20, 180)]:
        labels[0, r : r + 2, c : c + 2] = 1
    volume = Volume(np.zeros(labels.shape, np.float32), (1.0, 0.1, 0.1), (), "", "", "")
    out = cluster_output(manifest, rules, labels, volume)  # type: ignore[arg-type]
    assert [(lab.value, lab.name, lab.type.meaning) for lab in out.labels] == [
        (1, "Calcifications", "Calcification of breast"),
        (2, "Cluster 1", "Calcification Cluster"),
    ]
    by = {(m.label_value, m.concept): m.value for m in out.measurements}
    assert by[(1, CALCIFICATION_COUNT)] == 7 and by[(2, CALCIFICATION_COUNT)] == 5
    region = labels[0] == 2
    assert region[58, 60] and not region[150, 20] and not region[120, 120]
    assert (labels[0][50:52, 50:52] == 1).all()  # the specks keep their own label
    [long_axis] = [m.value for m in out.measurements if m.label_value == 2 and m.unit.value == "mm"]
    assert 3.5 < long_axis < 5.0  # the specks span about 2.5 mm, plus a 1 mm margin each side


def test_cluster_rules_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no label"):
        ClusterRules.from_manifest(_manifest(tmp_path, "label = 7"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="out of range"):
        ClusterRules.from_manifest(_manifest(tmp_path, "label = 1\nmin_count = 0"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clusters"):
        ClusterRules.from_manifest(_manifest(tmp_path, 'name = "x"'))  # type: ignore[arg-type]
