"""Web: a model whose weights' Python package is not installed is listed by the API, the
rules screen and the status screen as unavailable, with its version and the reason, apart
from the models that run; /metrics counts it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dicom_ai_node.app_web import model_infos
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.metrics import NodeMetrics
from dicom_ai_node.store import accounts
from dicom_ai_node.web.app import create_app
from dicom_ai_node.web.context import Backend, ModelInfo

from ..web_support import PASSWORD, add_users, web_context_at

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MISSING = "no-such-package-for-dicom-ai-node"
BRAIN, LUNGS = "mr-brain-extraction", "ct-chest-lungs"
#: The brain model's description as the manifest under test has it: markup as text.
DESCRIPTION = "Brain mask <script>alert(1)</script> & CSF"


def _models(folder: Path) -> Path:
    """A models folder: the lung model as shipped, and the brain model with its manifest
    naming a package that is not installed (and markup in its description)."""
    models = folder / "models"
    shutil.copytree(REPO / "models" / "ct_chest_lungs", models / "ct_chest_lungs")
    brain = models / "mr_brain_extraction"
    brain.mkdir()
    shipped = REPO / "models" / "mr_brain_extraction" / "model.toml"
    lines = []
    for line in shipped.read_text("utf-8").splitlines():
        if line.startswith("description = "):
            line = f'description = "{DESCRIPTION}"'
        lines.append(line.replace('"deepbet"', f'"{MISSING}"'))
    (brain / "model.toml").write_text("\n".join(lines) + "\n", "utf-8")
    return models


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        _models(tmp_path), Device("cpu", threads=2), metrics=NodeMetrics(process=False)
    )


@pytest.fixture
def app(tmp_path: Path, registry: ModelRegistry) -> Iterator[FastAPI]:
    backend = Backend(models=lambda: model_infos(registry))
    (tmp_path / "node").mkdir()
    with web_context_at(tmp_path / "node", backend=backend) as ctx:
        add_users(ctx)
        yield create_app(ctx)


def _signed_in(app: FastAPI) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    answer = client.post("/ui/login", data={"username": "viewer", "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return client


def test_the_registry_s_models_as_the_web_shows_them(registry: ModelRegistry) -> None:
    lungs, brain = model_infos(registry)
    assert (lungs.name, lungs.available, lungs.unavailable_reason) == (LUNGS, True, "")
    assert lungs.device.startswith("cpu") and not lungs.loaded
    assert brain == ModelInfo(
        BRAIN,
        "1.0.0",
        "",
        False,
        DESCRIPTION,
        available=False,
        unavailable_reason=f"the Python package {MISSING!r} is not installed",
    )


def test_the_api_lists_an_unavailable_model_with_the_reason(app: FastAPI) -> None:
    ctx = app.state.ctx
    _, token = accounts.add_token(ctx.sessions, "test", "viewer", None, "", ctx.clock())
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    answer = client.get("/api/v1/models")
    assert answer.status_code == 200, answer.text
    listed = {m["name"]: m for m in answer.json()}
    assert listed[LUNGS]["available"] is True and listed[LUNGS]["unavailable_reason"] == ""
    brain = listed[BRAIN]
    assert brain["available"] is False and brain["version"] == "1.0.0"
    assert brain["loaded"] is False and brain["device"] == ""
    assert brain["unavailable_reason"] == f"the Python package {MISSING!r} is not installed"
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]["ModelInfo"]
    assert {"available", "unavailable_reason"} <= set(schema["properties"])


def test_the_rules_screen_shows_it_apart_and_escaped(app: FastAPI) -> None:
    page = _signed_in(app).get("/ui/rules").text
    runnable, _, rest = page.partition('data-testid="models-unavailable"')
    assert f'data-testid="model-row" data-model="{LUNGS}"' in runnable
    assert BRAIN not in runnable  # not among the models that run, no pause button
    assert f'data-testid="model-unavailable-row" data-model="{BRAIN}"' in rest
    assert f'data-testid="model-{BRAIN}-state">unavailable<' in rest
    assert f'data-testid="model-{BRAIN}-reason">the Python package &#39;{MISSING}&#39;' in rest
    assert "<td>1.0.0</td>" in rest
    assert "<script>alert(1)</script>" not in page
    assert "Brain mask &lt;script&gt;alert(1)&lt;/script&gt; &amp; CSF" in rest


def test_the_status_screen_says_why_it_does_not_run(app: FastAPI) -> None:
    client = _signed_in(app)
    for url in ("/ui/", "/ui/fragments/status"):
        page = client.get(url).text
        cell = page.partition(f'data-testid="model-{BRAIN}-unavailable">')[2]
        assert cell.startswith('<span class="state state-unavailable">unavailable</span>')
        assert f"the Python package &#39;{MISSING}&#39; is not installed" in cell
    assert f'data-testid="model-{LUNGS}-unavailable"' not in page


def test_metrics_count_the_unavailable_model(registry: ModelRegistry) -> None:
    metrics = registry.metrics
    assert metrics.registry.get_sample_value("dicom_ai_node_models_unavailable") == 1.0
    assert metrics.registry.get_sample_value("dicom_ai_node_models_installed") == 1.0
