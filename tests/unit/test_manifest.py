"""Infer: manifests validate at load and name the file and key that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_ai_node.errors import ConfigError
from dicom_ai_node.infer.manifest import load_manifest

GOOD = """
name = "tiny"
version = "0.1"
task = "segmentation"
runner = "torchscript"
weights = "w.pt"
[input]
modalities = ["CT"]
body_parts = ["CHEST"]
[[labels]]
value = 1
name = "Lung"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["39607008", "SCT", "Lung"]
color = [10, 20, 30]
"""


def write(tmp_path: Path, text: str, weights: bool = True) -> Path:
    (tmp_path / "model.toml").write_text(text)
    if weights:
        (tmp_path / "w.pt").write_bytes(b"x")
    return tmp_path / "model.toml"


def test_good_manifest(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, GOOD))
    assert m.name == "tiny" and m.labels[0].color_rgb == (10, 20, 30)
    assert m.input.modalities == frozenset({"CT"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "tiny"', 'name = "Bad Name!"'), "name"),
        (('body_parts = ["CHEST"]', 'body_parts = ["TORSO"]'), "TORSO"),
        (("color = [10, 20, 30]", "color = [10, 20]"), "color"),
        (("value = 1", "value = 2"), "label values"),
        (("[input]", "surprise = 1\n[input]"), "unknown keys"),
        (('type = ["39607008", "SCT", "Lung"]', 'type = "Lung"'), "a code is"),
        (('task = "segmentation"', 'task = "detection"'), "task 'detection'"),
        (("[input]", '[preprocess]\nintensity = "zscore"\n[input]'), "intensity"),
        (
            ("[input]", "[[postprocess.ratios]]\nlabel = 1\nnumerator = [1]\n[input]"),
            "needs exactly label",
        ),
        (
            (
                "[input]",
                "[[postprocess.ratios]]\nlabel = 1\nnumerator = [1]\ndenominator = [3]\n"
                'code = ["R", "99X", "Ratio"]\n[input]',
            ),
            "ratios names labels \\[3\\]",
        ),
        (
            (
                "[input]",
                "[[postprocess.ratios]]\nlabel = 1\nnumerator = [1]\ndenominator = [1]\n"
                'code = ["R", "99X", "Ratio"]\n'
                'grades = { code = ["G", "99X", "Grade"], below = [0.5, 0.7] }\n[input]',
            ),
            "strictly decreasing",
        ),
        (
            (
                "[input]",
                "[[postprocess.ratios]]\nlabel = 1\nnumerator = [1]\ndenominator = [1]\n"
                'code = ["R", "99X", "Ratio"]\ngrades = { below = [0.5] }\n[input]',
            ),
            "grades: needs exactly code and below",
        ),
        (("[input]", '[preprocess]\ngeometry = "flat"\n[input]'), "geometry"),
        (("[input]", "[preprocess]\ncontext_mm = 0\n[input]"), "context_mm is a distance"),
        (
            ("[input]", "[preprocess]\ncontext_mm = 3.0\ntile = true\n[input]"),
            "context_mm \\(2.5-D input\\) is for segmentation of volumes",
        ),
    ],
)
def test_bad_manifests(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_manifest(write(tmp_path, GOOD.replace(*change)))


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="weights file"):
        load_manifest(write(tmp_path, GOOD, weights=False))


@pytest.mark.parametrize(
    ("postprocess", "message"),
    [
        ("threshold = 1.5", "threshold"),
        ('saliency = "yes"', "saliency"),
        ('activation = "relu"', "activation"),
    ],
)
def test_bad_classification_settings(tmp_path: Path, postprocess: str, message: str) -> None:
    text = GOOD.replace('task = "segmentation"', 'task = "classification"')
    with pytest.raises(ConfigError, match=message):
        load_manifest(write(tmp_path, f"{text}[postprocess]\n{postprocess}\n"))
    load_manifest(write(tmp_path, f"{text}[postprocess]\nthreshold = 0.3\nsaliency = true\n"))
