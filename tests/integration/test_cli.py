"""The command line, run as a subprocess the way an administrator runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dicom_ai_node.testing.series import make_ct_series, write_series

from ..conftest import REPO, free_port, write_node_config

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


def test_serve_stops_cleanly_when_its_web_port_is_taken(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        web_port = taken.getsockname()[1]
        config = write_node_config(
            tmp_path, f"sqlite:///{tmp_path / 'n.db'}", free_port(), [], web_port=web_port
        )
        result = cli("-c", str(config), "serve", timeout=120)
    finally:
        taken.close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{web_port}" in result.stderr
    assert "node stopped" in result.stderr + result.stdout  # the DICOM side too, cleanly


def _with_password(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line with a password on its standard input, as a script gives it."""
    return subprocess.run(
        [sys.executable, "-m", "dicom_ai_node.cli", *args],
        input="s3cret-enough\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_users_and_tokens_from_the_shell(tmp_path: Path) -> None:
    config = str(write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", 11112, []))
    add = _with_password("-c", config, "users", "add", "alice", "--role", "operator")
    assert add.returncode == 0, add.stderr
    assert "s3cret" not in add.stdout + add.stderr
    assert cli("-c", config, "users", "list").stdout.split() == ["alice", "operator"]
    again = _with_password("-c", config, "users", "add", "alice")
    assert again.returncode == 1 and "exists" in again.stderr
    assert cli("-c", config, "users", "add", "bob").returncode == 1  # no empty password
    made = cli("-c", config, "tokens", "add", "ris", "--role", "viewer", "--days", "30")
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip().splitlines()[-1]
    assert text.startswith("dan_") and len(text) > 40
    listed = cli("-c", config, "tokens", "list").stdout
    assert "ris\tviewer\texpires" in listed and text not in listed  # shown once only
    assert cli("-c", config, "tokens", "revoke", "1").returncode == 0
    assert "revoked" in cli("-c", config, "tokens", "list").stdout
