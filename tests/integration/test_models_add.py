"""Bring your own model, end to end for each format: ``dicom-ai-node models add`` validates,
tries and installs it and adds its rule; a chest CT sent over DICOM then comes back as a
SEG whose voxels are exactly the ones the model's threshold picks, and an SR (issue 3,
acceptance 4). The models are made in the test (tests/byo_models.py, docs/models.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.app import Node
from dicom_ai_node.cli import main
from dicom_ai_node.domain import JobState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.testing.series import make_ct_series, write_series

from ..byo_models import FORMATS, THRESHOLD_HU, make_model
from ..conftest import free_port, stop_process, write_node_config
from .test_pipeline import jobs, readable, start_storescp, wait_until

pytestmark = pytest.mark.integration

SIZE = 64


def _config(tmp_path: Path, port: int, pacs_port: int) -> Path:
    """A node whose models folder and rules file are the test's own (empty at first)."""
    models, rules = tmp_path / "models", tmp_path / "rules.yaml"
    models.mkdir()
    rules.write_text("# rules of the test\nrules: []\n")
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [("PACS", pacs_port)], 0.5
    )
    text = config.read_text()
    text = "\n".join(
        f'rules_file = "{rules}"'
        if line.startswith("rules_file")
        else f'models_dir = "{models}"\nbf16 = false'
        if line.startswith("models_dir")
        else line
        for line in text.splitlines()
    )
    config.write_text(text + "\n")
    return config


def _below_threshold(datasets: list[Dataset]) -> int:
    """Voxels of the series darker than the models' threshold (HU, PS3.3 C.11.1)."""
    total = 0
    for ds in datasets:
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        total += int((hu < THRESHOLD_HU).sum())
    return total


@pytest.mark.parametrize("kind", FORMATS)
def test_a_model_added_with_models_add_returns_results(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, pacs_port = free_port(), free_port()
    config = _config(tmp_path, port, pacs_port)
    _, datasets = make_ct_series(24, SIZE, SIZE, spacing_mm=(5.0, 5.0, 5.0), seed=41)
    study = tmp_path / "study"
    write_series(datasets, study)
    folder = make_model(kind, tmp_path / "incoming" / kind, SIZE)

    assert (
        main(["-c", str(config), "models", "add", str(folder), "--add-rule", "--study", str(study)])
        == 0
    )
    out = capsys.readouterr().out
    name = f"byo-{kind}"
    assert f"model {name} 0.1.0 ({kind}, segmentation): manifest valid" in out
    assert f"added rule '{name}'" in out and f"routed by rule '{name}'" in out
    assert f"-> {name}" in out, out  # the study's series would go to it
    assert (tmp_path / "models" / name / "model.toml").is_file()

    assert main(["-c", str(config), "models", "list"]) == 0
    assert f"{name} 0.1.0  task=segmentation runner={kind}" in capsys.readouterr().out

    pacs = start_storescp(pacs_port, tmp_path / "pacs")
    node = Node(load_settings(config))
    try:
        node.start()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="PACS"))
        wait_until(lambda: len(readable(tmp_path / "pacs")) >= 2, 90, "SEG and SR at the PACS")
        [job] = jobs(node)
        assert (job.model_name, job.state) == (name, JobState.DONE.value), job.reason
    finally:
        node.stop()
        stop_process(pacs)
    by_modality = {ds.Modality: ds for ds in readable(tmp_path / "pacs")}
    seg, sr = by_modality["SEG"], by_modality["SR"]
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID == sr.StudyInstanceUID
    assert name in seg.SeriesDescription
    assert int(np.asarray(seg.pixel_array).astype(bool).sum()) == _below_threshold(datasets)


def test_models_add_check_only_installs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, free_port(), free_port())
    folder = make_model("onnx", tmp_path / "incoming", SIZE)
    assert main(["-c", str(config), "models", "add", str(folder), "--check"]) == 0
    assert "checked only" in capsys.readouterr().out
    assert list((tmp_path / "models").iterdir()) == []
    assert "rules: []" in (tmp_path / "rules.yaml").read_text()


def test_a_model_whose_output_breaks_the_protocol_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A network with more output channels than labels + background is caught at add."""
    config = _config(tmp_path, free_port(), free_port())
    folder = make_model("torchscript", tmp_path / "incoming", SIZE)
    manifest = folder / "model.toml"
    manifest.write_text(manifest.read_text().split("[[labels]]")[0])  # no labels now
    assert main(["-c", str(config), "models", "add", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "model check failed" in err and "not (N, 1, H, W)" in err
    assert list((tmp_path / "models").iterdir()) == []


def test_a_second_model_of_the_same_name_needs_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, free_port(), free_port())
    folder = make_model("python", tmp_path / "incoming", SIZE)
    assert main(["-c", str(config), "models", "add", str(folder), "--add-rule"]) == 0
    assert main(["-c", str(config), "models", "add", str(folder)]) == 2
    assert "use --replace" in capsys.readouterr().err
    (folder / "threshold.json").write_text(json.dumps({"below_hu": -900.0}))
    assert main(["-c", str(config), "models", "add", str(folder), "--replace"]) == 0
    installed = tmp_path / "models" / "byo-python" / "threshold.json"
    assert json.loads(installed.read_text()) == {"below_hu": -900.0}
    assert (tmp_path / "rules.yaml").read_text().count('model: "byo-python"') == 1
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["byo-python"]


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("threshold", "needs entry_point = 'MODULE:FACTORY'"),
        ("no_such_module:make_runner", "neither a file of"),
        ("threshold:no_such_factory", "has no 'no_such_factory'"),
    ],
)
def test_a_python_entry_point_that_cannot_be_found_is_a_configuration_error(
    entry_point: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, free_port(), free_port())
    folder = make_model("python", tmp_path / "incoming", SIZE)
    manifest = folder / "model.toml"
    manifest.write_text(
        manifest.read_text().replace('"threshold:make_runner"', json.dumps(entry_point))
    )
    assert main(["-c", str(config), "models", "add", str(folder)]) == 2
    assert message in capsys.readouterr().err


def test_models_add_runs_as_a_command(tmp_path: Path) -> None:
    """The installed console script, as an administrator runs it."""
    config = _config(tmp_path, free_port(), free_port())
    folder = make_model("monai-bundle", tmp_path / "incoming", SIZE)
    exe = Path(__import__("sys").executable).with_name("dicom-ai-node")
    done = subprocess.run(
        [str(exe), "-c", str(config), "models", "add", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no rule of" in done.stdout and "--add-rule" in done.stdout
    assert "restart the node to load it" in done.stdout
