"""The stage boundaries of docs/architecture.md, checked by walking imports (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dicom_ai_node"
ALLOWED = {
    "pynetdicom": {"receive", "send"},
    "torch": {"infer"},
    "highdicom": {"encode"},
}
NO_IO = {"route", "encode"}
IO_MODULES = {"socket", "subprocess", "shutil", "sqlalchemy", "pynetdicom", "requests", "urllib"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _stage(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_heavy_libraries_stay_in_their_stage() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for lib, stages in ALLOWED.items():
            if lib in _imports(path) and _stage(path) not in stages:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {lib}")
    assert offenders == []


def test_route_and_encode_do_no_io() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {sorted(_imports(path) & IO_MODULES)}"
        for path in PACKAGE.rglob("*.py")
        if _stage(path) in NO_IO and _imports(path) & IO_MODULES
    ]
    assert offenders == []
