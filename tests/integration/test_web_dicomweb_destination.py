"""A DICOMweb destination in the operator's window: its name is a URL, slashes and all.

Its screen, its API detail, pause and resume reach it by that name; C-ECHO, a DIMSE
service, is refused with the reason instead of failing on a URL that is not AE@HOST:PORT.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicom_ai_node.settings import Destination, SendSettings
from dicom_ai_node.store import accounts
from dicom_ai_node.web.app import create_app
from dicom_ai_node.web.context import Backend, ModelInfo, WebContext
from dicom_ai_node.web.pages_kit import _segment

from ..web_support import PASSWORD, web_context_at

URL = "https://archive.example/dicom-web"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    backend = Backend(
        models=lambda: [ModelInfo("m", "1", "cpu", True, "")],
        listener=lambda: {"ae_title": "AI", "host": "127.0.0.1", "port": 11112},
        destinations=lambda: [URL],
    )
    send = SendSettings(destinations=(Destination(URL, protocol="dicomweb"),))
    with web_context_at(tmp_path, backend=backend, send=send) as ctx:
        accounts.add_user(ctx.sessions, "operator", PASSWORD, "operator", ctx.clock())
        _, token = accounts.add_token(ctx.sessions, "t", "operator", None, "", ctx.clock())
        yield _signed(ctx, token)


def _signed(ctx: WebContext, token: str) -> TestClient:
    client = TestClient(create_app(ctx), follow_redirects=False)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def test_a_url_destination_is_reached_by_its_name(client: TestClient) -> None:
    name = _segment(URL)
    assert "/" not in name  # the screens quote it as one segment
    detail = client.get(f"/api/v1/destinations/{name}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["summary"]["destination"] == URL
    assert client.get(f"/api/v1/destinations/{URL}").status_code == 200  # unquoted too
    assert client.post(f"/api/v1/destinations/{name}/pause").status_code == 200
    [listed] = client.get("/api/v1/destinations").json()
    assert (listed["destination"], listed["paused"]) == (URL, True)
    assert client.post(f"/api/v1/destinations/{name}/resume").status_code == 200
    assert client.get("/api/v1/destinations").json()[0]["paused"] is False


def test_c_echo_of_a_dicomweb_destination_is_refused_with_the_reason(client: TestClient) -> None:
    answer = client.post(f"/api/v1/destinations/{_segment(URL)}/echo")
    assert answer.status_code == 409
    assert "DIMSE only" in answer.json()["detail"]
    assert client.post("/api/v1/destinations/NOPE@h:1/echo").status_code == 404
