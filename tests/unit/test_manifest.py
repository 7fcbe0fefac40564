"""Infer: manifests validate at load and name the file and key that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_ai_node.errors import ConfigError
from dicom_ai_node.infer.manifest import default_series_number, load_manifest
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device

REPO = Path(__file__).resolve().parents[2]

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
        (('task = "segmentation"', 'task = "segmentation"\nseries_number = 0'), "series_number"),
        (('version = "0.1"', f'version = "{"1." * 20}0"'), "longer than 32 characters"),
        (('task = "segmentation"', 'task = "segmentation"\nseries_number = "9"'), "series_number"),
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


def test_series_numbers_are_the_models_own(tmp_path: Path) -> None:
    assert load_manifest(write(tmp_path, GOOD)).series_number == default_series_number("tiny")
    assert 20000 <= default_series_number("tiny") <= 919900
    given = GOOD.replace('task = "segmentation"', 'task = "segmentation"\nseries_number = 9100')
    assert load_manifest(write(tmp_path, given)).series_number == 9100
    models = tmp_path / "models"
    for name, number in (("a", 9100), ("b", 9150)):
        (models / name).mkdir(parents=True)
        text = given.replace('"tiny"', f'"{name}"').replace("9100", str(number))
        write(models / name, text)
    with pytest.raises(ConfigError, match="series_number 9150 of b is within 100 of a's 9100"):
        ModelRegistry(models, Device("cpu"))
    registry = ModelRegistry(REPO / "models", Device("cpu"))  # the built-in models
    assert len({m.series_number for m in registry}) == len(registry) > 10


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
