"""A real PACS for tests: a fresh Orthanc process per test, and a receiver that records.

:class:`OrthancFactory` starts ``Orthanc`` (Debian's package, 1.10 or later) with its own
JSON configuration, index and storage under the test's ``tmp_path``, on free 127.0.0.1
ports, with the DICOMweb plugin loaded and ``TCP_NODELAY=1`` in its environment, and
stops every process it started by its pid at teardown. The ``orthanc_factory`` fixture
in ``tests/conftest.py`` gives one to a test::

    def test_x(orthanc_factory, recording_storescp):
        pacs = orthanc_factory.start(
            modalities={"ai-node": ("AI_NODE", "127.0.0.1", recording_storescp.port)},
            lua_scripts=[RECIPE],
            user_metadata=recipe_user_metadata(),
        )
        pacs.send(datasets)                     # C-STORE as the modality
        series = pacs.wait_for_series(study_uid, count=3)
        assert ..., pacs.tail()                 # Orthanc's log in the message

A missing Orthanc or DICOMweb plugin skips the test, or fails it when ``CI=true``
(``scripts/install-tools.sh`` installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_ai_node.send.scu import Peer, send_datasets

from .conftest import dcmtk_env, free_port, stop_process, wait_for_port
from .tools import require_tool

__all__ = [
    "DICOMWEB_PLUGIN",
    "RECIPE",
    "Orthanc",
    "OrthancFactory",
    "RecordingStoreSCP",
    "SeriesInfo",
    "recipe_constant",
    "recipe_user_metadata",
    "require_orthanc",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "docs" / "recipes" / "orthanc-autoforward.lua"
"""The auto-forward rule shipped to administrators; tests load this very file."""

DICOMWEB_PLUGIN = Path(
    os.environ.get("ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)
"""Debian's ``orthanc-dicomweb`` plugin (override with ``ORTHANC_DICOMWEB_PLUGIN``)."""

_SBIN = ("/usr/sbin", "/usr/local/sbin")  # Debian puts Orthanc in /usr/sbin
_AE_TITLE = "ORTHANC"
_T = TypeVar("_T")


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_orthanc() -> tuple[str, Path]:
    """Orthanc's executable and its DICOMweb plugin; skip without them (fail when ``CI=true``)."""
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path=os.pathsep.join(_SBIN))
    exe = require_tool(found or "Orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        _missing(
            f"Orthanc's DICOMweb plugin {DICOMWEB_PLUGIN} is missing "
            "(scripts/install-tools.sh installs Debian's orthanc-dicomweb)"
        )
    return exe, DICOMWEB_PLUGIN


def recipe_constant(name: str, recipe: Path = RECIPE) -> str:
    """The value of ``local NAME = '...'`` at the top of the Lua recipe."""
    match = re.search(rf"^local {name} = '([^']*)'", recipe.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{recipe.name} defines no constant {name}")
    return match.group(1)


def recipe_user_metadata(recipe: Path = RECIPE) -> dict[str, int]:
    """The ``UserMetadata`` entry the recipe's memory needs."""
    return {recipe_constant("MEMORY", recipe): 1024}


def wait_until(
    what: str,
    probe: Callable[[], _T | None],
    timeout_s: float,
    explain: Callable[[], str] = lambda: "",
    interval_s: float = 0.1,
) -> _T:
    """Call ``probe`` until it returns something other than None, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not after {timeout_s} s\n{explain()}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a study as Orthanc lists it."""

    orthanc_id: str
    series_instance_uid: str
    modality: str
    series_description: str
    instances: int
    metadata: Mapping[str, str]


class Orthanc:
    """A running Orthanc: REST helpers over ``urllib`` and a C-STORE sender.

    Parameters
    ----------
    proc:
        The process (its own process group).
    http_port, dicom_port:
        Its REST/DICOMweb and DICOM ports on 127.0.0.1.
    log_path:
        Its stdout and stderr.
    """

    ae_title = _AE_TITLE

    def __init__(
        self, proc: subprocess.Popen[bytes], http_port: int, dicom_port: int, log_path: Path
    ) -> None:
        self.proc, self.http_port, self.dicom_port = proc, http_port, dicom_port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{http_port}"

    @property
    def peer(self) -> Peer:
        """Orthanc's Storage SCP, for ``send_datasets`` or a node's AE table."""
        return Peer(self.ae_title, "127.0.0.1", self.dicom_port)

    # --- logs -------------------------------------------------------------------------

    def log(self) -> str:
        """Orthanc's whole log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def tail(self, lines: int = 40) -> str:
        """The end of Orthanc's log, for assertion messages."""
        return "--- Orthanc log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def lua_lines(self, prefix: str = "") -> list[str]:
        """What Lua scripts printed (``Lua says: ...``), in order, optionally by prefix."""
        said = [
            line.split("Lua says: ", 1)[1]
            for line in self.log().splitlines()
            if "Lua says: " in line
        ]
        return [line for line in said if line.startswith(prefix)]

    def wait_for_lua(self, pattern: str, count: int = 1, timeout_s: float = 30.0) -> list[str]:
        """Wait (bounded) until Lua printed ``count`` lines matching the regex ``pattern``."""

        def probe() -> list[str] | None:
            found = [line for line in self.lua_lines() if re.search(pattern, line)]
            return found if len(found) >= count else None

        return wait_until(f"{count} Lua lines matching {pattern!r}", probe, timeout_s, self.tail)

    # --- REST -------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
        """One HTTP request to the REST API; raises ``AssertionError`` (with the log) on >= 400."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AssertionError(
                f"{method} {path}: HTTP {exc.code} {detail}\n{self.tail()}"
            ) from exc

    def get(self, path: str) -> Any:
        """GET a JSON resource."""
        return json.loads(self.request("GET", path))

    def post(self, path: str, body: Any) -> Any:
        """POST a JSON body (a ``str`` is sent as is); returns the parsed answer or the text."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        answer = self.request("POST", path, data, **{"Content-Type": "application/json"})
        try:
            return json.loads(answer)
        except json.JSONDecodeError:
            return answer.decode(errors="replace")

    def put(self, path: str, body: str) -> None:
        """PUT a text body (e.g. a metadata value)."""
        self.request("PUT", path, body.encode())

    # --- DICOM content ----------------------------------------------------------------

    def send(self, datasets: Iterable[Dataset | Path], calling_ae_title: str = "MODALITY") -> None:
        """C-STORE instances into Orthanc as a modality would; all must be stored."""
        outcomes = send_datasets(datasets, self.peer, calling_ae_title=calling_ae_title)
        failed = [o for o in outcomes if not o.delivered]
        assert not failed, f"Orthanc refused {failed[:3]}\n{self.tail()}"

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's id of a study, or None while it has none."""
        found = self.post("/tools/lookup", study_uid)
        ids = [item["ID"] for item in found if item.get("Type") == "Study"]
        return ids[0] if ids else None

    def series(self, study_uid: str) -> list[SeriesInfo]:
        """The study's series (in Orthanc's order) with their counts and metadata."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        out = []
        for item in self.get(f"/studies/{study}/series"):
            tags = item["MainDicomTags"]
            out.append(
                SeriesInfo(
                    orthanc_id=item["ID"],
                    series_instance_uid=tags.get("SeriesInstanceUID", ""),
                    modality=tags.get("Modality", ""),
                    series_description=tags.get("SeriesDescription", ""),
                    instances=len(item["Instances"]),
                    metadata=self.get(f"/series/{item['ID']}/metadata?expand"),
                )
            )
        return out

    def wait_for_series(
        self, study_uid: str, count: int, instances: int = 0, timeout_s: float = 60.0
    ) -> list[SeriesInfo]:
        """Wait (bounded) until the study has ``count`` series and ``instances`` instances."""

        def probe() -> list[SeriesInfo] | None:
            found = self.series(study_uid)
            enough = len(found) >= count and sum(s.instances for s in found) >= instances
            return found if enough else None

        return wait_until(f"{count} series in study {study_uid}", probe, timeout_s, self.tail)

    def download_instance(self, instance_id: str, folder: Path) -> Path:
        """Save an instance's DICOM file (``/instances/{id}/file``) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{instance_id}.dcm"
        path.write_bytes(self.request("GET", f"/instances/{instance_id}/file"))
        return path

    def download_series(self, series_id: str, folder: Path) -> list[Path]:
        """Save every instance of a series into ``folder`` (e.g. for ``dciodvfy_errors``)."""
        return [
            self.download_instance(i, folder) for i in self.get(f"/series/{series_id}")["Instances"]
        ]

    def qido_series(self, study_uid: str) -> list[dict[str, Any]]:
        """QIDO-RS ``/dicom-web/studies/{uid}/series`` (PS3.18 10.6), parsed DICOM JSON."""
        answer = self.request(
            "GET", f"/dicom-web/studies/{study_uid}/series", Accept="application/dicom+json"
        )
        return json.loads(answer) if answer.strip() else []


def _configuration(
    tmp: Path,
    http_port: int,
    dicom_port: int,
    plugin: Path,
    *,
    modalities: Mapping[str, tuple[str, str, int]],
    lua_scripts: Sequence[Path],
    stable_age_s: int,
    user_metadata: Mapping[str, int],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Orthanc's JSON configuration for one test."""
    return {
        "Name": "dicom-ai-node test PACS",
        "DicomAet": _AE_TITLE,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
        "DicomModalitiesInDatabase": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "LuaScripts": [str(p) for p in lua_scripts],
        "StableAge": stable_age_s,
        "UserMetadata": dict(user_metadata),
        "SaveJobs": False,
        **extra,
    }


class OrthancFactory:
    """Starts fresh Orthanc processes under one folder; :meth:`stop_all` ends them.

    Parameters
    ----------
    tmp_path:
        Each Orthanc gets ``tmp_path/orthanc-<n>`` for its configuration, index, storage
        and log.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Orthanc] = []

    def start(
        self,
        *,
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        lua_scripts: Sequence[Path] = (),
        stable_age_s: int = 2,
        user_metadata: Mapping[str, int] | None = None,
        http_port: int | None = None,
        dicom_port: int | None = None,
        extra: Mapping[str, Any] | None = None,
        timeout_s: float = 30.0,
    ) -> Orthanc:
        """Start an Orthanc and wait (bounded) until its REST API answers.

        Parameters
        ----------
        modalities:
            ``DicomModalities``: symbolic name -> (AE title, host, port).
        lua_scripts:
            ``LuaScripts``, loaded as they are.
        stable_age_s:
            ``StableAge``: seconds without a new instance before a series or study is stable.
        user_metadata:
            ``UserMetadata``: name -> index (1024..65535).
        http_port, dicom_port:
            Fixed ports (e.g. chosen earlier for a node's AE table); free ones by default.
        extra:
            Further configuration options, overriding the defaults.
        """
        exe, plugin = require_orthanc()
        folder = self.tmp_path / f"orthanc-{len(self.started)}"
        folder.mkdir()
        http_port, dicom_port = http_port or free_port(), dicom_port or free_port()
        config = _configuration(
            folder,
            http_port,
            dicom_port,
            plugin,
            modalities=modalities or {},
            lua_scripts=lua_scripts,
            stable_age_s=stable_age_s,
            user_metadata=user_metadata or {},
            extra=extra or {},
        )
        config_path = folder / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        log_path = folder / "orthanc.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [exe, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dcmtk_env(),  # TCP_NODELAY=1: Debian's build stalls ~40 ms per message without
                cwd=folder,
                start_new_session=True,
            )
        orthanc = Orthanc(proc, http_port, dicom_port, log_path)
        self.started.append(orthanc)
        self._wait_ready(orthanc, timeout_s)
        return orthanc

    @staticmethod
    def _wait_ready(orthanc: Orthanc, timeout_s: float) -> None:
        def probe() -> bool | None:
            if orthanc.proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {orthanc.proc.returncode}\n{orthanc.tail()}"
                )
            try:
                with urllib.request.urlopen(orthanc.url + "/system", timeout=1) as response:
                    return True if response.status == 200 else None
            except OSError:
                return None

        wait_until("Orthanc's REST API", probe, timeout_s, orthanc.tail)
        wait_for_port(orthanc.dicom_port, timeout_s, orthanc.proc)

    def stop_all(self) -> None:
        """Stop each Orthanc started here by its pid (SIGTERM, then SIGKILL); check it is gone."""
        for orthanc in self.started:
            stop_process(orthanc.proc)
        alive = [o.proc.pid for o in self.started if o.proc.poll() is None]
        assert not alive, f"Orthanc processes still running: {alive}"


class RecordingStoreSCP:
    """A dcmtk ``storescp`` that keeps every reception (timestamp file names, none overwritten).

    Stands in for the node as a forward target: :meth:`received` lists what arrived,
    in order, a re-sent instance once per time it came.
    """

    def __init__(self, folder: Path, ae_title: str = "AI_NODE", port: int | None = None) -> None:
        self.folder, self.ae_title = folder, ae_title
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start storescp and wait (bounded) until it listens."""
        exe = require_tool("storescp")
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [exe, "-aet", self.ae_title, "-od", str(self.folder), "+xa", "-tn", str(self.port)]
        self.proc = subprocess.Popen(
            args,
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, 15, self.proc)

    def stop(self) -> None:
        """Stop storescp by its pid."""
        if self.proc is not None:
            stop_process(self.proc)

    def received(self) -> list[Dataset]:
        """Headers of every complete file received so far, in the order they arrived.

        storescp names a file by its creation time in milliseconds, adding ``_0000``,
        ``_0001``... to names made within the same millisecond; a file still being
        written ends the list.
        """
        out: list[Dataset] = []
        for path in sorted(p for p in self.folder.iterdir() if p.is_file()):
            try:
                out.append(dcmread(path, stop_before_pixels=True))
            except (InvalidDicomError, EOFError, OSError):  # still being written
                break
        return out

    def series_order(self) -> list[str]:
        """Series Instance UIDs in order of arrival, consecutive repeats merged."""
        order: list[str] = []
        for ds in self.received():
            if not order or order[-1] != ds.SeriesInstanceUID:
                order.append(str(ds.SeriesInstanceUID))
        return order
