"""OHIF Viewer 3.13.2 for the browser tests: its prebuilt ``dist/`` served next to Orthanc.

:class:`OhifServer` is a threaded HTTP server on 127.0.0.1 (a free port) that serves
``tests/interop/ohif/node_modules/@ohif/app/dist`` (``npm ci`` there, run by
scripts/install-tools.sh), an ``app-config.js`` written for the test (one DICOMweb data
source whose QIDO-RS, WADO-RS and WADO-URI roots are this server's own ``/dicom-web``),
and every other path that is not a file as ``index.html`` (OHIF routes in the page: the
SPA fallback its own ``serve.json`` asks for). ``/dicom-web/...`` is proxied, GET only,
to an Orthanc's DICOMweb plugin with the browser's ``Host`` header, so the bulk data
URIs Orthanc writes into its metadata name this server as well: the viewer and the
archive share one origin and no CORS is needed. Use it as a context manager; it stops
its thread and closes its socket on exit.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from ..conftest import IN_CI, REPO

__all__ = ["OHIF_DIST", "OHIF_VERSION", "OhifServer", "app_config", "require_ohif"]

OHIF_VERSION = "3.13.2"
OHIF_DIR = REPO / "tests" / "interop" / "ohif"
OHIF_DIST = OHIF_DIR / "node_modules" / "@ohif" / "app" / "dist"
PROXY_TIMEOUT_S = 30.0
#: Types Python's ``mimetypes`` may not know; WebAssembly must be ``application/wasm``.
EXTRA_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}
#: Orthanc's answer headers passed on to the browser.
PASSED_HEADERS = ("Content-Type", "Content-Length", "ETag", "Last-Modified")


def require_ohif() -> Path:
    """OHIF's ``dist`` folder at the pinned version; skip without it (fail when ``CI=true``)."""
    package = OHIF_DIST.parent / "package.json"
    version = json.loads(package.read_text())["version"] if package.is_file() else None
    if version == OHIF_VERSION and (OHIF_DIST / "index.html").is_file():
        return OHIF_DIST
    found = f"version {version}" if version else "not installed"
    message = (
        f"OHIF {OHIF_VERSION} prebuilt viewer {found} at {OHIF_DIST.relative_to(REPO)} "
        "(scripts/install-tools.sh runs npm ci in tests/interop/ohif)"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pytest.skip raises


def app_config(origin: str) -> str:
    """OHIF's ``window.config`` with one DICOMweb data source at ``{origin}/dicom-web``.

    The options follow OHIF's own configuration for Orthanc (``docker-nginx-orthanc``):
    Orthanc's QIDO-RS takes ``includefield``, and WADO-RS gives metadata with bulk data
    URIs. No study list, no investigational-use dialog, no notices: the test opens a
    study by URL and reads the viewport.
    """
    root = f"{origin}/dicom-web"
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (test)",
            "name": "orthanc",
            "wadoUriRoot": root,
            "qidoRoot": root,
            "wadoRoot": root,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config: dict[str, Any] = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": False,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class _Handler(SimpleHTTPRequestHandler):
    """Static files of ``dist``, the test's ``app-config.js``, and the DICOMweb proxy."""

    server: _Server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.extensions_map = {**self.extensions_map, **EXTRA_TYPES}  # set before it serves
        super().__init__(*args, directory=str(OHIF_DIST), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        path = self.path.split("?", 1)[0]  # a query may name the patient (QIDO-RS)
        self.server.requests.append(f"{self.command} {path} -> {args[1] if len(args) > 1 else ''}")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/dicom-web/"):
            self._proxy()
        elif path == "/app-config.js":
            self._send(200, "text/javascript", self.server.app_config.encode())
        else:
            if not os.path.isfile(self.translate_path(path)):
                self.path = "/index.html"  # SPA fallback: OHIF's router reads the URL
            super().do_GET()

    def _not_allowed(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def do_HEAD(self) -> None:
        if self.path.startswith("/dicom-web/"):
            self._not_allowed()
        else:
            super().do_HEAD()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self) -> None:
        """GET ``self.path`` from Orthanc with the browser's Accept and Host headers."""
        headers = {
            "Host": self.headers.get("Host", ""),
            "Accept": self.headers.get("Accept", "*/*"),
        }
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.server.orthanc_port, timeout=PROXY_TIMEOUT_S
        )
        try:
            conn.request("GET", self.path, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
        except OSError as exc:
            self._send(502, "text/plain", f"Orthanc: {exc}".encode())
            return
        finally:
            conn.close()
        self.send_response(answer.status)
        for name in PASSED_HEADERS:
            value = answer.getheader(name)
            if value is not None and name != "Content-Length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, orthanc_port: int, app_config: str) -> None:
        self.orthanc_port, self.app_config = orthanc_port, app_config
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class OhifServer:
    """OHIF's ``dist`` and a GET-only DICOMweb proxy to Orthanc, on one 127.0.0.1 origin.

    Parameters
    ----------
    orthanc_port:
        The HTTP port of an Orthanc with its DICOMweb plugin at ``/dicom-web/``.
    """

    def __init__(self, orthanc_port: int) -> None:
        require_ohif()
        self._server = _Server(orthanc_port, "")
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._server.app_config = app_config(self.url)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def requests(self) -> list[str]:
        """``METHOD path -> status`` of every request so far (for assertion messages)."""
        return list(self._server.requests)

    def __enter__(self) -> OhifServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
