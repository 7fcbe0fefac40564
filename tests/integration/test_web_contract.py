"""Web: the REST API keeps its OpenAPI contract, and every screen action has its API twin.

The live document at ``/api/v1/openapi.json`` of a running node (uvicorn on a free port,
a seeded SQLite index) drives schemathesis: every operation gets a bounded number of
generated requests with an admin token, and none may answer 5xx, a status the document
does not list, or a body that does not match its schema. Generation is derandomized so
CI runs the same requests each time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from dicom_ai_node.web.api_actions import ACTIONS

from .web_seed import app_routes, web_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Generated requests per operation (each is a real HTTP request).
EXAMPLES = 15
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]

#: Each screen action (``POST /ui/actions/<name>``) and the API actions it stands for.
UI_TO_API = {
    "/ui/actions/rerun": ["/api/v1/jobs/{job_id}/rerun"],
    "/ui/actions/cancel": ["/api/v1/jobs/{job_id}/cancel"],
    "/ui/actions/resend": [
        "/api/v1/results/{result_id}/resend",
        "/api/v1/jobs/{job_id}/resend",
    ],
    "/ui/actions/force-complete": [
        "/api/v1/series/{series_uid}/complete",
        "/api/v1/studies/{study_uid}/complete",
    ],
    "/ui/actions/pause": [
        "/api/v1/destinations/{name}/pause",
        "/api/v1/models/{name}/pause",
    ],
    "/ui/actions/resume": [
        "/api/v1/destinations/{name}/resume",
        "/api/v1/models/{name}/resume",
    ],
    "/ui/actions/retry": ["/api/v1/failures/retry"],
    "/ui/actions/echo": ["/api/v1/destinations/{destination}/echo"],
    "/ui/actions/explain": ["/api/v1/studies/{study_uid}/route-explain"],
}


def _fuzz(operation: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Run the checks on generated requests for one operation; the failures found."""
    found: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # every check failure (a group), with its request
            if len(found) < 3:
                found.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")

    run()
    return found


def test_the_live_api_matches_its_openapi_document(tmp_path: Path) -> None:
    started = time.monotonic()
    with web_node(tmp_path) as web:
        url = f"{web.url}/api/v1/openapi.json"
        assert httpx.get(url, timeout=10).status_code == 401  # the document needs a login
        schema = schemathesis.openapi.from_url(url, timeout=30, headers=web.headers("viewer"))
        operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
        paths = {op.path for op in operations}
        assert {path for _, path in ACTIONS} <= {f"/api/v1{p}" for p in paths} | paths
        failures: list[str] = []
        for operation in operations:
            failures += _fuzz(operation, web.url, web.headers("admin"))
        assert len(operations) >= 25
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 240


def test_every_screen_action_has_its_api_endpoint(tmp_path: Path) -> None:
    with web_node(tmp_path) as web:
        app = web.app
        assert app is not None
        routes = list(app_routes(app.routes))
        ui_actions = {p for m, p in routes if m == "POST" and p.startswith("/ui/actions/")}
        api_actions = {p for m, p in routes if m == "POST" and p.startswith("/api/v1/")}
    assert ui_actions == set(UI_TO_API), "screen actions without a documented API twin"
    wanted = {path for paths in UI_TO_API.values() for path in paths}
    assert wanted <= {path for _, path in ACTIONS}, "API.ACTIONS misses a screen's action"
    assert wanted <= api_actions, "an action the screens offer has no API route"
    assert {path for _, path in ACTIONS} <= api_actions
