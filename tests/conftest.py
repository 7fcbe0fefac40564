"""Shared fixtures: free ports, databases (SQLite and PostgreSQL), dcmtk peers, node processes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dicom_ai_node.receive.gate import Limits
from dicom_ai_node.receive.scp import ScpConfig, StorageSCP
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.store.ingest import Ingest
from dicom_ai_node.testing.series import phi_canaries_in

if TYPE_CHECKING:
    from .orthanc import OrthancFactory, RecordingStoreSCP

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "DICOM_AI_NODE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class _CanaryWatch(logging.Handler):
    """Collects log records that contain a patient canary (dicom_ai_node.testing.series)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)  # includes the traceback and exception message
        found = phi_canaries_in(text)
        if found:
            self.leaks.append(f"{', '.join(found)} in: {text[:300]}")


@pytest.fixture(autouse=True)
def no_phi_in_logs() -> Iterator[None]:
    """Fail a test whose log records (any level, the node's loggers at DEBUG) hold PHI.

    Every generated series carries canary patient values; a record that contains one is
    a leak. Node processes are checked through their log files (see ``node_factory``).
    """
    watch = _CanaryWatch()
    root, ours = logging.getLogger(), logging.getLogger("dicom_ai_node")
    level = ours.level
    root.addHandler(watch)
    ours.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(watch)
        ours.setLevel(level)
    assert not watch.leaks, "patient data in log records:\n" + "\n".join(watch.leaks)


def assert_no_phi_in_file(path: Path) -> None:
    """A node's log file holds no patient canary."""
    if path.is_file():
        found = phi_canaries_in(path.read_text(errors="replace"))
        assert not found, f"patient data ({', '.join(found)}) in {path.name}"


@contextlib.contextmanager
def serving(
    files: FileStore,
    db_url: str,
    limits: Limits | None = None,
    lock_timeout_s: float = 30.0,
    network_timeout_s: float = 60.0,
) -> Iterator[tuple[StorageSCP, Database]]:
    """A started StorageSCP over ``files`` and a fresh index; stopped and closed after."""
    db = Database(db_url, lock_timeout_s)
    db.migrate()
    config = ScpConfig(
        ae_title="AI_NODE",
        host="127.0.0.1",
        port=free_port(),
        limits=limits or Limits(),
        network_timeout_s=network_timeout_s,
    )
    server = StorageSCP(config, Ingest(files, db.session, utcnow))
    server.start()
    try:
        yield server, db
    finally:
        server.stop()
        db.dispose()


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait (bounded) until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout_s} s")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 20.0
) -> None:
    """Stop a process group started with start_new_session=True; SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _pg_available() -> str | None:
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or a new PostgreSQL database dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.db'}"
        return
    problem = _pg_available()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL needed in CI but unavailable: {problem}")
        pytest.skip(f"PostgreSQL not available at 127.0.0.1:5432: {problem}")
    from sqlalchemy import create_engine, text

    name = f"dain_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def require_exe(name: str) -> str:
    """Path of an executable (also next to this Python); fail in CI, skip elsewhere."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    message = f"{name} not installed (scripts/install-tools.sh installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_real_volumes() -> None:
    """Skip (fail in CI) unless the real volumes' Debian files and nibabel are installed.

    The files of :mod:`dicom_ai_node.testing.real_volumes` come from Debian
    ``mricron-data`` and ``invesalius-examples`` (scripts/install-tools.sh installs them);
    nibabel, which reads Colin27, from the ``test`` extra.
    """
    import importlib.util

    from dicom_ai_node.testing.real_volumes import available

    missing = available()
    if importlib.util.find_spec("nibabel") is None:
        missing.append("the nibabel package (pip install -e '.[test]')")
    if not missing:
        return
    message = "real volumes missing (scripts/install-tools.sh installs them): " + ", ".join(missing)
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_volumes() -> None:
    """The real test volumes are installed: skip without them, fail in CI."""
    require_real_volumes()


def dcmtk_env() -> dict[str, str]:
    """Environment for dcmtk: TCP_NODELAY=1 (else Debian's build stalls ~40 ms per message)."""
    return {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A dcmtk storescp (AE PACS) on a free port writing to tmp_path/pacs; yields (port, folder)."""
    exe = require_exe("storescp")
    out = tmp_path / "pacs"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-aet", "PACS", "-od", str(out), "+xa", "-uf", str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 15, proc)
        yield port, out
    finally:
        stop_process(proc)


def write_node_config(
    tmp_path: Path,
    db_url: str,
    port: int,
    ae_table: list[tuple[str, int]],
    quiet_s: float = 2.0,
    extra: str = "",
    web_port: int = 0,
    web_extra: str = "",
) -> Path:
    """A settings file for a node under test (models and rules from the repository).

    The web service listens on ``web_port`` of 127.0.0.1 (0: a free port the node picks,
    printed by ``serve``); ``web_extra`` adds keys to its ``[web]`` section.
    """
    lines = [
        f'base_dir = "{tmp_path}"',
        "[dicom]",
        'ae_title = "AI_NODE"',
        'host = "127.0.0.1"',
        f"port = {port}",
        "[storage]",
        f'root = "{tmp_path / "storage"}"',
        f'database_url = "{db_url}"',
        "min_free_mb = 10",
        "spare_pool_mb = 16",  # some instances go through spares, the rest the plain path
        "[web]",
        'host = "127.0.0.1"',
        f"port = {web_port}",
        web_extra,
        "[assemble]",
        f"quiet_period_s = {quiet_s}",
        "sweep_interval_s = 0.2",
        "[route]",
        f'rules_file = "{REPO / "models" / "rules.yaml"}"',
        "[infer]",
        f'models_dir = "{REPO / "models"}"',
        "[send]",
        "retry_initial_s = 1.0",
        "retry_max_s = 5.0",
        extra,  # keys of [send] unless it opens a section of its own
    ]
    for ae, ae_port in ae_table:
        lines += ["[[ae_table]]", f'ae_title = "{ae}"', 'host = "127.0.0.1"', f"port = {ae_port}"]
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """``dicom-ai-node serve`` in its own process group, with its output in a log file."""

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        self.config, self.port, self.log_path = config, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "dicom_ai_node.cli", "-c", str(self.config)),
                    *("serve", "--log-level", "DEBUG"),  # no PHI at any level
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )
        wait_for_port(self.port, timeout_s, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[type[NodeProcess]]:
    """Make node processes that are always stopped at teardown."""
    made: list[NodeProcess] = []

    class _Factory(NodeProcess):
        def __init__(self, config: Path, port: int) -> None:
            super().__init__(config, port, tmp_path / f"node-{len(made)}.log")
            made.append(self)

    yield _Factory
    for node in made:
        node.stop()
    for node in made:
        assert_no_phi_in_file(node.log_path)


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[OrthancFactory]:
    """Start fresh Orthanc processes (``tests/orthanc.py``); all stopped by their pid after.

    Their logs (Orthanc's and what Lua scripts print) must hold no patient canary.
    """
    from .orthanc import OrthancFactory

    factory = OrthancFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
    for orthanc in factory.started:
        assert_no_phi_in_file(orthanc.log_path)


@pytest.fixture
def recording_storescp(tmp_path: Path) -> Iterator[RecordingStoreSCP]:
    """A dcmtk storescp (AE AI_NODE) that keeps every reception, in order (a node stand-in)."""
    from .orthanc import RecordingStoreSCP

    receiver = RecordingStoreSCP(tmp_path / "received")
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
