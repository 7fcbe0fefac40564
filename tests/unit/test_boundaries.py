"""The stage rules of docs/architecture.md, checked by walking the imports (ast).

A stage imports only the stages below it and the shared core; each heavy library stays
in its stage; only store runs SQL; route and encode do no I/O; nothing but tests,
benchmarks and training scripts imports :mod:`dicom_ai_node.testing`; and the package
has no import cycle. Each rule is a function of the import graph, and every rule is
shown to fail on a made-up breach, so none of them passes by being unable to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "dicom_ai_node"

#: Modules at the package's top level that wire stages together (the composition root
#: and the command line, and the worker's job step); they may import every stage.
WIRING = {"app", "app_web", "cli", "cli_accounts", "cli_models", "pipeline"}
#: What each stage may import besides itself and the shared core (the package's other
#: top-level modules). The order is the data flow read from the bottom up.
STAGES: dict[str, set[str]] = {
    "core": set(),
    "store": set(),
    "route": set(),
    "encode": set(),
    "infer": set(),
    "privacy": {"store"},
    "receive": {"store", "route"},
    "send": {"store"},
    "audit": {"store"},
    "assemble": {"store", "route"},
    "web": {"store", "route", "audit"},
    "testing": set(),
    "wiring": {
        "store",
        "route",
        "encode",
        "infer",
        "privacy",
        "receive",
        "send",
        "audit",
        "assemble",
        "web",
    },
}
#: Third-party libraries and the only stages that may import them.
LIBRARIES: dict[str, set[str]] = {
    "sqlalchemy": {"store"},
    "alembic": {"store"},
    "sqlite3": {"store"},
    "psycopg": {"store"},
    "psycopg2": {"store"},
    "torch": {"infer"},
    "highdicom": {"encode"},
    "pynetdicom": {"receive", "send"},
    "fastapi": {"web"},
    "starlette": {"web"},
    "uvicorn": {"web"},
    "jinja2": {"web"},
    "jwt": {"web"},
    "prometheus_client": {"web", "core"},
    "httpx": {"send"},
}
#: Stages that do no I/O: what they need is handed to them.
NO_IO = {"route", "encode"}
#: Imports and calls that read or write files, sockets, processes or databases.
IO_MODULES = {
    "socket", "subprocess", "shutil", "tempfile", "glob", "sqlite3", "sqlalchemy", "pynetdicom",
    "requests", "urllib", "http",
}  # fmt: skip
IO_CALLS = {
    "open", "read_text", "read_bytes", "write_text", "write_bytes", "dcmread", "dcmwrite",
    "save_as", "unlink", "rename", "mkdir", "rmdir", "iterdir", "glob", "rglob", "listdir",
    "scandir", "fsync",
}  # fmt: skip
#: The modules allowed some of those calls (never the I/O modules), each with its reason.
IO_ALLOWED = {
    "dicom_ai_node.route.load": "reads the rules file, once, when the node starts",
    "dicom_ai_node.encode.validate": "round-trips each object through bytes in memory",
}
#: Folders outside the package that may import the test data generators.
TESTING_USERS = {"tests", "bench", "models"}


@dataclass(frozen=True)
class Module:
    """One module of the package: its dotted name, imports and calls."""

    name: str
    path: Path
    #: Modules of the package it imports when it runs (``TYPE_CHECKING`` blocks left out).
    runtime: frozenset[str]
    #: Every module of the package it names, typing-only imports included.
    named: frozenset[str]
    #: Top-level names of the third-party and standard modules it imports.
    libraries: frozenset[str]
    #: Names of the functions and methods it calls.
    calls: frozenset[str]


def _dotted(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST, typing_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it sits in an ``if TYPE_CHECKING:`` block."""
    for child in ast.iter_child_nodes(tree):
        inside = typing_only or (isinstance(child, ast.If) and _is_type_checking(child))
        yield child, inside
        yield from _walk(child, inside)


def _targets(node: ast.ImportFrom | ast.Import, name: str, known: set[str]) -> Iterator[str]:
    """The package modules an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name in known)
        return
    base = node.module or ""
    if node.level:
        package = name.split(".")
        is_package = f"{name}.__init__" in known  # a package's own relative imports
        anchor = package[: len(package) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            yield sub
        elif base in known:
            yield base


def load_modules(root: Path = PACKAGE) -> dict[str, Module]:
    """Parse every module under ``root`` into its imports and calls."""
    paths = {_dotted(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(paths) | {f"{n}.__init__" for n, p in paths.items() if p.name == "__init__.py"}
    modules = {}
    for name, path in paths.items():
        runtime: set[str] = set()
        named: set[str] = set()
        libraries: set[str] = set()
        calls: set[str] = set()
        for node, typing_only in _walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found = set(_targets(node, name, known))
                named |= found
                if not typing_only:
                    runtime |= found
                if isinstance(node, ast.Import):
                    libraries |= {a.name.split(".")[0] for a in node.names}
                elif node.level == 0 and node.module:
                    libraries.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):
                    calls.add(func.id)
                elif isinstance(func, ast.Attribute):
                    calls.add(func.attr)
        modules[name] = Module(
            name,
            path,
            frozenset(runtime - {name}),
            frozenset(named - {name}),
            frozenset(libraries - {root.name}),
            frozenset(calls),
        )
    return modules


def stage_of(name: str) -> str:
    """The stage of a module: its subpackage, ``wiring`` or ``core`` at the top level."""
    parts = name.split(".")
    if len(parts) == 1:
        return "core"  # the package's __init__
    if f"{parts[0]}.{parts[1]}" == name and parts[1] not in STAGES:
        return "wiring" if parts[1] in WIRING else "core"
    return parts[1] if parts[1] in STAGES else "core"


def stage_breaches(modules: Mapping[str, Module]) -> list[str]:
    """Imports of a stage that is not below the importer's."""
    out = []
    for m in modules.values():
        mine = stage_of(m.name)
        for target in sorted(m.named):
            theirs = stage_of(target)
            if theirs not in {mine, "core"} and theirs not in STAGES[mine]:
                out.append(f"{m.name} ({mine}) imports {target} ({theirs})")
    return out


def library_breaches(modules: Mapping[str, Module]) -> list[str]:
    """Imports of a library outside the stages it belongs to."""
    return [
        f"{m.name} imports {lib}"
        for m in modules.values()
        for lib, stages in LIBRARIES.items()
        if lib in m.libraries and stage_of(m.name) not in stages
    ]


def io_breaches(modules: Mapping[str, Module]) -> list[str]:
    """I/O in the stages that are handed what they need."""
    out = []
    for m in modules.values():
        if stage_of(m.name) not in NO_IO:
            continue
        calls = m.calls & IO_CALLS if m.name not in IO_ALLOWED else set()
        found = (m.libraries & IO_MODULES) | calls
        if found:
            out.append(f"{m.name}: {sorted(found)}")
    return out


def cycles(modules: Mapping[str, Module]) -> list[list[str]]:
    """The import cycles (strongly connected components of the runtime import graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:  # Tarjan's algorithm
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in sorted(modules[name].runtime):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == name:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return sorted(found)


def importers_of_testing(repo: Path = REPO) -> list[str]:
    """Python files outside tests/, bench/, models/ and the testing package that import it."""
    out = []
    package = repo / "dicom_ai_node"
    for m in load_modules(package).values() if package.is_dir() else []:
        if stage_of(m.name) != "testing" and any(stage_of(t) == "testing" for t in m.named):
            out.append(str(m.path.relative_to(repo)))
    for path in sorted(repo.rglob("*.py")):
        rel = path.relative_to(repo)
        if rel.parts[0] in {*TESTING_USERS, "dicom_ai_node"} or rel.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if isinstance(node, ast.ImportFrom):  # from dicom_ai_node import testing
                names += [f"{node.module}.{a.name}" for a in node.names]
            if any(
                n == "dicom_ai_node.testing" or n.startswith("dicom_ai_node.testing.")
                for n in names
            ):
                out.append(str(rel))
                break
    return out


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules()


def test_a_stage_imports_only_the_stages_below_it(modules: dict[str, Module]) -> None:
    assert stage_breaches(modules) == []


def test_each_library_stays_in_its_stage(modules: dict[str, Module]) -> None:
    assert library_breaches(modules) == []


def test_route_and_encode_do_no_io(modules: dict[str, Module]) -> None:
    assert io_breaches(modules) == []


def test_the_package_has_no_import_cycle(modules: dict[str, Module]) -> None:
    assert cycles(modules) == []


def test_every_subpackage_is_a_stage_the_rules_know() -> None:
    """A new folder in the package gets its place in :data:`STAGES` (else it would pass
    as shared core, importable from everywhere)."""
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders - STAGES.keys() == set()


def test_only_tests_benches_and_training_import_the_test_data() -> None:
    assert importers_of_testing() == []


# -- each rule fails on a breach ------------------------------------------------------------
def _package(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Module]:
    root = tmp_path / "dicom_ai_node"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.parent != root:
            (path.parent / "__init__.py").touch()
    return load_modules(root)


def test_the_rules_catch_a_breach_of_each_kind(tmp_path: Path) -> None:
    modules = _package(
        tmp_path,
        {
            "store/jobs.py": "from ..pipeline import Pipeline\n",
            "pipeline.py": "from .store.jobs import claim_job\nfrom sqlalchemy import select\n",
            "route/rules.py": "from ..assemble import sweep\nimport torch\n",
            "assemble/sweep.py": "from ..route import rules\n",
            "encode/seg.py": "def save(ds, path):\n    ds.save_as(path)\n",
            "send/scu.py": "from ..testing.series import make_ct_series\n",
            "testing/series.py": "",
        },
    )
    assert stage_breaches(modules) == [
        "dicom_ai_node.route.rules (route) imports dicom_ai_node.assemble.sweep (assemble)",
        "dicom_ai_node.send.scu (send) imports dicom_ai_node.testing.series (testing)",
        "dicom_ai_node.store.jobs (store) imports dicom_ai_node.pipeline (wiring)",
    ]
    assert sorted(library_breaches(modules)) == [
        "dicom_ai_node.pipeline imports sqlalchemy",
        "dicom_ai_node.route.rules imports torch",
    ]
    assert io_breaches(modules) == ["dicom_ai_node.encode.seg: ['save_as']"]
    assert cycles(modules) == [
        ["dicom_ai_node.assemble.sweep", "dicom_ai_node.route.rules"],
        ["dicom_ai_node.pipeline", "dicom_ai_node.store.jobs"],
    ]


def test_typing_only_imports_make_no_cycle_but_still_count_for_the_stage_rule(
    tmp_path: Path,
) -> None:
    modules = _package(
        tmp_path,
        {
            "store/jobs.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from ..send.scu import Peer\n"
            ),
            "send/scu.py": "from ..store import jobs\n",
        },
    )
    assert cycles(modules) == []
    assert stage_breaches(modules) == [
        "dicom_ai_node.store.jobs (store) imports dicom_ai_node.send.scu (send)"
    ]


def test_a_file_outside_tests_benches_and_training_may_not_import_the_test_data(
    tmp_path: Path,
) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "demo.py").write_text("from dicom_ai_node.testing import series\n")
    (tmp_path / "scripts" / "other.py").write_text("from dicom_ai_node import testing\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "ingest.py").write_text("from dicom_ai_node.testing import series\n")
    assert importers_of_testing(tmp_path) == ["scripts/demo.py", "scripts/other.py"]
