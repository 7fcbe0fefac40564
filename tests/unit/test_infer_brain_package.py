"""Weights inside an installed package (manifest ``package``): a model whose package is
missing is unavailable, listed with the reason, and its rules are skipped, not fatal."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import pytest

from dicom_ai_node.cli_models import cmd_models_list, cmd_route_explain
from dicom_ai_node.domain import BodyPart
from dicom_ai_node.errors import ConfigError
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.package import package_root
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.route import load_rules, route_series
from dicom_ai_node.route.rules import rule_values
from dicom_ai_node.settings import load_settings
from dicom_ai_node.testing.series import write_series

from .test_route_rules import info

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "models" / "mr_brain_extraction"
MISSING = "no-such-package-for-dicom-ai-node"

RULES = """
rules:
  - name: brain-mr-extraction
    model: mr-brain-extraction
    when:
      modality: MR
      body_part: [HEAD]
"""


def _models(tmp_path: Path, package: str = MISSING) -> Path:
    """A models folder holding the brain model, its manifest naming ``package``."""
    models = tmp_path / "models"
    folder = models / "mr_brain_extraction"
    folder.mkdir(parents=True)
    text = (BRAIN / "model.toml").read_text("utf-8")
    (folder / "model.toml").write_text(text.replace('"deepbet"', f'"{package}"'), "utf-8")
    return models


def test_a_missing_package_makes_the_model_unavailable_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_ai_node.infer.registry"):
        registry = ModelRegistry(_models(tmp_path), Device("cpu"))
    assert len(registry) == 0 and "mr-brain-extraction" not in registry.specs
    reason = registry.unavailable["mr-brain-extraction"]
    assert MISSING in reason and "not installed" in reason
    logged = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(logged) == 1 and MISSING in logged[0].getMessage()


def test_a_rule_naming_an_unavailable_model_is_skipped_with_the_reason(tmp_path: Path) -> None:
    registry = ModelRegistry(_models(tmp_path), Device("cpu"))
    with pytest.raises(ConfigError, match="unknown model"):  # not known at all: refused
        load_rules(RULES, list(registry.manifests))
    rules = load_rules(RULES, list(registry.manifests), registry.unavailable)
    assert rules.models == frozenset()
    series = info(modality="MR", body_part_examined="HEAD", series_description="T1 MPRAGE")
    result = rules.rules[0].evaluate(rule_values(series, BodyPart.HEAD))
    assert not result.matched
    assert "skipped: model unavailable" in result.explanation and MISSING in result.explanation
    decision = route_series(series, rules, registry.specs)
    assert decision.models == ()
    assert any("skipped: model unavailable" in line for line in decision.explanation)


def test_models_list_and_route_explain_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = _models(tmp_path)
    shutil.copytree(REPO / "models" / "ct_chest_lungs", models / "ct_chest_lungs")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, "utf-8")
    config = tmp_path / "node.toml"
    config.write_text(
        f'base_dir = "{tmp_path}"\n[infer]\nmodels_dir = "{models}"\n'
        f'[route]\nrules_file = "{rules}"\n',
        "utf-8",
    )
    settings = load_settings(config, env={})
    assert cmd_models_list(argparse.Namespace(), settings) == 0
    listed = capsys.readouterr().out
    assert "ct-chest-lungs" in listed
    assert f"mr-brain-extraction  unavailable: the Python package {MISSING!r}" in listed
    from dicom_ai_node.testing.series import make_ct_series

    _, series = make_ct_series(4, 16, 16, seed=3)
    write_series(series, tmp_path / "dicom")
    args = argparse.Namespace(path=str(tmp_path / "dicom"), rules=None, calling_ae="")
    assert cmd_route_explain(args, settings) == 0
    assert "skipped: model unavailable" in capsys.readouterr().out


def test_weights_resolve_inside_the_installed_package() -> None:
    pytest.importorskip("deepbet")
    manifest = load_manifest(BRAIN / "model.toml")
    root = package_root("deepbet")
    assert root is not None and manifest.unavailable == ""
    assert manifest.weights_path == root / "data" / "models" / "model.pt"
    assert manifest.resolve(manifest.preprocess["bbox_weights"]).is_file()


def test_a_package_without_the_named_weights_is_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("deepbet")
    models = _models(tmp_path, package="deepbet")
    path = models / "mr_brain_extraction" / "model.toml"
    path.write_text(path.read_text("utf-8").replace("model.pt", "absent.pt"), "utf-8")
    registry = ModelRegistry(models, Device("cpu"))
    assert "has no data/models/absent.pt" in registry.unavailable["mr-brain-extraction"]


def test_another_version_of_the_package_makes_the_model_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("deepbet")
    models = _models(tmp_path, package="deepbet")
    path = models / "mr_brain_extraction" / "model.toml"
    text = path.read_text("utf-8")
    assert 'package_version = "1.0.2"' in text
    path.write_text(text.replace('package_version = "1.0.2"', 'package_version = "0.9"'), "utf-8")
    reason = ModelRegistry(models, Device("cpu")).unavailable["mr-brain-extraction"]
    assert "is version 1.0.2" in reason and "follows version 0.9" in reason


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('package = "deepbet"', 'package = "not a name"', "package is the name"),
        ('package = "deepbet"', "", "package_version is a version string"),
        ('package_version = "1.0.2"', "package_version = 1.02", "package_version is a version"),
        ('labels = [1, 2]\ncode = ["TIV"', 'labels = [1, 3]\ncode = ["TIV"', "totals names"),
        ('bbox_weights = "data/models/bbox_model.pt"', "", "bbox_weights"),
        ("bf16 = true", 'bf16 = "yes"', "bf16 is true or false"),
    ],
)
def test_brain_manifest_errors_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = (BRAIN / "model.toml").read_text("utf-8")
    assert old in text
    path = tmp_path / "model.toml"
    path.write_text(text.replace(old, new), "utf-8")
    with pytest.raises(ConfigError, match=message):
        load_manifest(path)
