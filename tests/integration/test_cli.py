"""The command line, run as a subprocess the way an administrator runs it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dicom_ai_node.testing.series import make_ct_series, write_series

from ..conftest import REPO, write_node_config

pytestmark = pytest.mark.integration


def cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_ai_node.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_init_writes_a_commented_config_that_loads(tmp_path: Path) -> None:
    result = cli("init", str(tmp_path / "node.toml"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "node.toml").read_text()
    assert "# Our AE title" in text
    tomllib.loads(text)
    assert cli("init", str(tmp_path / "node.toml")).returncode == 1  # no silent overwrite


def test_models_list_shows_the_builtin_model(tmp_path: Path) -> None:
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", 11112, [])
    result = cli("-c", str(config), "models", "list")
    assert result.returncode == 0, result.stderr
    assert "ct-chest-lungs" in result.stdout and "Not for clinical use" in result.stdout


def test_route_explain_a_folder(tmp_path: Path) -> None:
    _, chest = make_ct_series(24, 32, 32, seed=1)
    _, scout = make_ct_series(
        2,
        32,
        32,
        seed=11,
        series_description="SCOUT",
        study_instance_uid=str(chest[0].StudyInstanceUID),
    )
    write_series(chest, tmp_path / "dicom" / "a")
    write_series(scout, tmp_path / "dicom" / "b")
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", 11112, [])
    result = cli("-c", str(config), "route", "explain", str(tmp_path / "dicom"))
    assert result.returncode == 0, result.stderr
    assert "ct-chest-lungs" in result.stdout
    assert "not routed" in result.stdout.lower()
    assert "PHANTOM" not in result.stdout  # no patient names in operator output


def test_wrong_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dicom]\nport = 99999\n")
    result = cli("-c", str(bad), "jobs")
    assert (
        result.returncode == 2
        and "configuration error" in result.stderr
        and "dicom.port" in result.stderr
    )


def test_send_with_progress_to_storescp(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    port, out = storescp
    _, datasets = make_ct_series(5, 16, 16, seed=2)
    write_series(datasets, tmp_path / "s")
    result = cli("send", str(tmp_path / "s"), "--to", f"PACS@127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert "5/5" in result.stderr and "sent 5 of 5" in result.stdout
    assert len(list(out.iterdir())) == 5


def test_jobs_on_a_new_database(tmp_path: Path) -> None:
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", 11112, [])
    result = cli("-c", str(config), "jobs")
    assert result.returncode == 0 and "no studies received yet" in result.stdout
