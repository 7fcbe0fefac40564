"""Web: who may do what, over a real socket: every route refuses a caller without
credentials, each role does exactly its actions, revoked and expired tokens are refused,
refusals are audited, viewers never see the PHI canaries, and OIDC tokens are checked
against a key pair the test makes (issuer, audience, expiry, signature, role claim).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dicom_ai_node.store import accounts
from dicom_ai_node.testing.series import phi_canaries_in
from dicom_ai_node.web.api_actions import ACTIONS

from .web_seed import SERIES, STUDY, WebNode, app_routes, web_node

pytestmark = pytest.mark.integration

#: Answer without credentials (``/metrics`` from loopback, as here). The OpenAPI document
#: is public too: it describes the API, it holds no data.
PUBLIC = {"/livez", "/readyz", "/metrics", "/ui/login"}
ISSUER, AUDIENCE = "https://idp.example.org/realms/rad", "dicom-ai-node"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    with web_node(tmp_path_factory.mktemp("web-access")) as node:
        yield node


def _fill(path: str, web: WebNode) -> str:
    """A route's path with harmless values for its parameters."""
    values = {
        "study_uid": STUDY,
        "uid": STUDY,
        "series_uid": SERIES,
        "job_id": str(web.job_queued),
        "result_id": str(web.result),
        "destination": web.destination,
        "name": "no-such-thing",
        "id": "999",
    }
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "1"), path)


def _routes(web: WebNode) -> list[tuple[str, str]]:
    """(method, path) of every route of the application, parameters filled."""
    assert web.app is not None
    return [(method, _fill(path, web)) for method, path in app_routes(web.app.routes)]


def _refusals(web: WebNode) -> list[str]:
    """The descriptions of Use of Restricted Function alerts in the local audit log."""
    text = web.audit_text()
    out = []
    for line in text.splitlines():
        if "Use of Restricted Function" not in line:
            continue
        for value in re.findall(r'type="Alert Description" value="([^"]*)"', line):
            out.append(base64.b64decode(value).decode("utf-8", "replace"))
    return out


def _client(web: WebNode, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=web.url, timeout=30, follow_redirects=False, **kwargs)


def test_without_credentials_only_health_login_and_static_answer(web: WebNode) -> None:
    routes = _routes(web)
    assert len(routes) > 40
    before = len(_refusals(web))
    refused_api = 0
    with _client(web) as client:
        for method, path in routes:
            if method == "POST" and path == "/ui/login":
                continue  # the login form itself (its own tests)
            answer = client.request(method, path)
            where = f"{method} {path}"
            if path in PUBLIC:
                assert answer.status_code == 200, where
            elif path.startswith("/api/"):
                assert answer.status_code == 401, where
                assert answer.headers["content-type"].startswith("application/problem+json")
                refused_api += 1
            elif path.startswith("/ui"):
                assert answer.status_code == 303, where
                assert answer.headers["location"].startswith("/ui/login"), where
            else:
                assert answer.status_code in (401, 404), where
            assert not phi_canaries_in(answer.text), where
        assert client.get("/static/style.css").status_code == 200
        assert client.get("/static/htmx.min.js").status_code == 200
    refusals = _refusals(web)[before:]
    assert len(refusals) >= refused_api
    assert any("refused for an anonymous client: authentication required" in r for r in refusals)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_roles_below_admin_cannot_read_the_audit_trail(web: WebNode, role: str) -> None:
    with _client(web, headers=web.headers(role)) as client:
        assert client.get("/api/v1/audit").status_code == 403
    assert any(f"GET /api/v1/audit refused for token t-{role}" in r for r in _refusals(web))


def test_a_viewer_is_refused_every_action(web: WebNode) -> None:
    with _client(web, headers=web.headers("viewer")) as client:
        for method, path in ACTIONS:
            answer = client.request(
                method, _fill(path, web), json={"destination": web.destination, "kind": "jobs"}
            )
            assert answer.status_code == 403, path
            assert answer.json()["status"] == 403
    refusals = _refusals(web)
    for method, path in ACTIONS:
        wanted = (
            f"{method} {_fill(path, web)} refused for token t-viewer: the operator role is required"
        )
        assert wanted in refusals, wanted


def test_an_operator_may_act_and_an_admin_reads_the_audit_trail(web: WebNode) -> None:
    body = {"destination": web.destination, "kind": "deliveries"}
    with _client(web, headers=web.headers("operator")) as client:
        for method, path in ACTIONS:
            answer = client.request(method, _fill(path, web), json=body)
            assert answer.status_code not in (401, 403), path
            assert answer.status_code < 500, (path, answer.text)
        answer = client.post(f"/api/v1/results/{web.result}/resend", json=body)
        assert answer.status_code == 200 and answer.json() == {"count": 1}
        answer = client.post(f"/api/v1/jobs/{web.job_failed}/rerun")
        assert answer.status_code == 200, answer.text
    with _client(web, headers=web.headers("admin")) as client:
        answer = client.get("/api/v1/audit", params={"limit": 500})
        assert answer.status_code == 200
        texts = json.dumps(answer.json())
        assert f"rerun job {web.job_failed} by token t-operator" in texts


def test_viewers_never_see_patient_data_and_operators_do(web: WebNode) -> None:
    reads = [(m, p) for m, p in _routes(web) if m == "GET" and p.startswith("/api/v1/")]
    seen = {"viewer": "", "operator": ""}
    now = web.clock()
    for role in seen:
        session, _csrf = accounts.new_session(web.node.db.session, f"u-{role}", role, now, 60)
        with _client(web, headers=web.headers(role)) as client:
            for _, path in reads:
                answer = client.get(path)
                assert answer.status_code < 500, path
                seen[role] += answer.text
        with _client(web, cookies={"dan_session": session}) as client:
            for method, path in _routes(web):
                if method == "GET" and path.startswith("/ui") and path != "/ui/login":
                    answer = client.get(path)
                    assert answer.status_code < 500, path
                    seen[role] += answer.text
    assert phi_canaries_in(seen["viewer"]) == []
    assert phi_canaries_in(seen["operator"]), "the canaries never reached an operator's view"


def test_revoked_and_expired_tokens_are_refused(web: WebNode) -> None:
    sessions, now = web.node.db.session, web.clock()
    pk, revoked = accounts.add_token(sessions, "to-revoke", "operator", None, "", now)
    _, expiring = accounts.add_token(
        sessions, "expiring", "operator", now + dt.timedelta(minutes=1), "", now
    )
    with _client(web) as client:
        for text in (revoked, expiring):
            bearer = {"Authorization": f"Bearer {text}"}
            assert client.get("/api/v1/status", headers=bearer).status_code == 200
        accounts.revoke_token(sessions, pk, web.clock())
        bearer = {"Authorization": f"Bearer {revoked}"}
        assert client.get("/api/v1/status", headers=bearer).status_code == 401
        web.clock.offset = dt.timedelta(minutes=2)
        try:
            bearer = {"Authorization": f"Bearer {expiring}"}
            assert client.get("/api/v1/status", headers=bearer).status_code == 401
        finally:
            web.clock.offset = dt.timedelta()
        made_up = {"Authorization": "Bearer dan_" + "x" * 43}
        assert client.get("/api/v1/status", headers=made_up).status_code == 401


# -- OIDC -------------------------------------------------------------------------------


def _key_pair() -> tuple[bytes, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return private, public


def test_oidc_tokens_are_checked_against_the_issuers_keys(tmp_path: Path) -> None:
    private, public = _key_pair()
    other, _ = _key_pair()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    extra = "\n".join(
        [
            f'oidc_issuer = "{ISSUER}"',
            f'oidc_audience = "{AUDIENCE}"',
            f'oidc_jwks_file = "{jwks}"',
        ]
    )

    def token(key: bytes = private, **changes: Any) -> dict[str, str]:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-123",
            "preferred_username": "olga",
            "iat": now,
            "exp": now + 300,
            "roles": ["operator"],
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        text = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return {"Authorization": f"Bearer {text}"}

    with web_node(tmp_path, web_extra=extra) as web, _client(web) as client:
        good = token()
        assert client.get("/api/v1/status", headers=good).status_code == 200
        # an operator: may act (404: no such model), may not read the audit trail
        assert client.post("/api/v1/models/none/pause", headers=good).status_code == 404
        assert client.get("/api/v1/audit", headers=good).status_code == 403
        admin = token(roles=["viewer", "admin"])
        assert client.get("/api/v1/audit", headers=admin).status_code == 200
        viewer = token(roles="viewer")
        assert client.post("/api/v1/models/none/pause", headers=viewer).status_code == 403
        refused = {
            "wrong issuer": token(iss="https://evil.example.org"),
            "wrong audience": token(aud="someone-else"),
            "expired": token(exp=int(time.time()) - 600, iat=int(time.time()) - 900),
            "wrong key": token(other),
            "no role": token(roles=None),
            "unknown role": token(roles=["superuser"]),
            "no subject": token(sub=None),
        }
        for why, headers in refused.items():
            assert client.get("/api/v1/status", headers=headers).status_code == 401, why
        unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "roles": ["admin"]},
                              key="", algorithm="none")  # fmt: skip
        bearer = {"Authorization": f"Bearer {unsigned}"}
        assert client.get("/api/v1/status", headers=bearer).status_code == 401
        assert any("refused for an anonymous client" in r for r in _refusals(web))
