"""The README's first command, `make serve`, starts a node that answers C-ECHO and serves
the operator's window at the URL it prints, where the first admin can log in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE

from ..conftest import REPO, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.integration


def test_make_serve_listens_with_the_builtin_model(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make, "make is needed for the README commands"
    port = free_port()
    env = {
        **os.environ,
        "DICOM_AI_NODE_DICOM_PORT": str(port),
        "DICOM_AI_NODE_DICOM_HOST": "127.0.0.1",
        "DICOM_AI_NODE_STORAGE_ROOT": str(tmp_path / "storage"),
        "DICOM_AI_NODE_WEB_PORT": str(free_port()),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [make, "--no-print-directory", "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, 120, proc)
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_AI_NODE")
        try:
            assert assoc.is_established
            assert int(assoc.send_c_echo().Status) == 0
        finally:
            assoc.release()
            ae.shutdown()
        text = log.read_text()
        assert "listening as DICOM_AI_NODE" in text and "ct-chest-lungs 2.0.0" in text
        assert (tmp_path / "node.db").exists()  # embedded SQLite beside the storage root
        _log_in_at_printed_url(log, tmp_path / "web" / "initial-admin-password")
    finally:
        stop_process(proc)


def _log_in_at_printed_url(log: Path, password_file: Path) -> None:
    """The URL ``serve`` prints answers; the first admin logs in with the password the
    first start wrote (never printed) and sees the status screen."""
    deadline = time.monotonic() + 60
    found = None
    while found is None and time.monotonic() < deadline:
        found = re.search(r"operator window at (http://\S+/ui/)", log.read_text())
        time.sleep(0.2)
    assert found, log.read_text()
    url = found.group(1)
    assert password_file.stat().st_mode & 0o077 == 0  # readable by the node's user only
    password = password_file.read_text().strip()
    assert password not in log.read_text()
    with httpx.Client(base_url=url.removesuffix("/ui/"), timeout=10) as client:
        assert client.get("/ui/login").status_code == 200
        answer = client.post("/ui/login", data={"username": "admin", "password": password})
        assert answer.status_code == 303, answer.text
        status = client.get("/ui/")
        assert status.status_code == 200 and "DICOM_AI_NODE" in status.text
        assert client.get("/livez").text == "ok\n"
