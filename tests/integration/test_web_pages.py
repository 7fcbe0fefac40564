"""Web: the operator's screens over a real SQLite index, through the ASGI app: sign-in and
its cookie, redirects to the login form, every screen for a viewer without patient data,
the action forms (role, CSRF, outcome shown), the login rate limit, escaping."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dicom_ai_node.metrics import NodeMetrics
from dicom_ai_node.store import accounts
from dicom_ai_node.store.index import InstanceRecord, SeriesAttrs, index_instance
from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
    phi_canaries_in,
)
from dicom_ai_node.web.app import create_app
from dicom_ai_node.web.auth import LoginLimiter
from dicom_ai_node.web.context import WebContext
from dicom_ai_node.web.pages_kit import local_path
from dicom_ai_node.web.pages_study import VIEWER_PREVIEW_ALT

from ..web_support import (
    DEAD_DESTINATION,
    DESTINATION,
    MODEL,
    PASSWORD,
    RULES_TEXT,
    SeededStudy,
    add_users,
    seed_study,
    web_context,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.integration

#: Every screen a viewer may open (the study and destination pages are added per test).
SCREENS = [
    "/ui/",
    "/ui/studies",
    "/ui/failures",
    "/ui/destinations",
    "/ui/rules",
    "/ui/associations",
]
FRAGMENTS = [
    "/ui/fragments/status",
    "/ui/fragments/studies",
    "/ui/fragments/failures",
    "/ui/fragments/destinations",
    "/ui/fragments/associations",
]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def app(web_context: WebContext) -> FastAPI:  # noqa: F811
    add_users(web_context)
    return create_app(web_context)


@pytest.fixture
def seeded(web_context: WebContext) -> Iterator[list[SeededStudy]]:  # noqa: F811
    yield [
        seed_study(web_context, 1),
        seed_study(web_context, 2, failed_delivery=True, failed_job=True),
    ]


def sign_in(app: FastAPI, role: str) -> tuple[TestClient, str]:
    """A client signed in as the user of ``role``, and its session's CSRF token."""
    client = TestClient(app, follow_redirects=False)
    answer = client.post("/ui/login", data={"username": role, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    page = client.get("/ui/")
    assert page.status_code == 200
    found = _CSRF.search(page.text)
    assert found is not None
    return client, found[1]


class Answer(Protocol):
    """What the test client answers (whichever httpx it is built on)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...


def flash_after(client: TestClient, answer: Answer) -> str:
    """The flash message of the page an action redirected to."""
    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"])
    assert page.status_code == 200
    found = re.search(r'data-testid="flash">([^<]*)<', page.text)
    assert found is not None, "no flash message on " + answer.headers["location"]
    return found[1]


def test_signed_out_pages_redirect_to_the_login_form(app: FastAPI) -> None:
    client = TestClient(app, follow_redirects=False)
    for path in [*SCREENS, "/ui/audit", "/ui/studies/1.2.3", "/ui/studies?model=x&state=done"]:
        answer = client.get(path)
        assert answer.status_code == 303, path
        location = urlsplit(answer.headers["location"])
        assert location.path == "/ui/login" and not location.netloc
        assert parse_qs(location.query)["next"] == [path]
    fragment = client.get(
        "/ui/fragments/status",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/ui/failures"},
    )
    assert fragment.status_code == 401
    assert fragment.headers["hx-redirect"] == "/ui/login?next=%2Fui%2Ffailures"
    action = client.post("/ui/actions/rerun", data={"job": "1", "csrf": "x"})
    assert action.status_code == 303 and action.headers["location"].startswith("/ui/login")


def test_login_sets_a_strict_http_only_session_cookie_and_goes_on_only_to_local_pages(
    app: FastAPI,
    web_context: WebContext,  # noqa: F811
) -> None:
    client = TestClient(app, follow_redirects=False)
    form = client.get("/ui/login", params={"next": "https://evil.example/ui/"})
    assert form.status_code == 200 and 'id="login-username"' in form.text
    assert 'name="next" value="/ui/"' in form.text
    answer = client.post(
        "/ui/login",
        data={"username": "viewer", "password": PASSWORD, "next": "//evil.example/ui/"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("dan_session=")
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/", "max-age=28800"} <= flags
    assert "secure" not in flags  # no TLS here
    assert client.get("/ui/").status_code == 200
    back = client.post(
        "/ui/login", data={"username": "viewer", "password": PASSWORD, "next": "/ui/failures"}
    )
    assert back.headers["location"] == "/ui/failures"

    tls = dataclasses.replace(web_context, tls=True, metrics=NodeMetrics(process=False))
    secure = TestClient(create_app(tls), follow_redirects=False)
    signed = secure.post("/ui/login", data={"username": "viewer", "password": PASSWORD})
    assert "secure" in {p.strip().lower() for p in signed.headers["set-cookie"].split(";")}


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/ui/",
        "//evil.example/ui/",
        "/ui//evil.example",
        "/ui/\\evil.example",
        "/ui/\x0d\x0aSet-Cookie: x=1",
        "/api/v1/tokens",
        "ui/",
        "",
    ],
)
def test_only_local_screens_are_a_place_to_go_after_login(target: str) -> None:
    assert local_path(target) == "/ui/"


def test_a_login_form_posted_from_another_site_is_refused(app: FastAPI) -> None:
    """Fetch Metadata decides; ``Origin: null`` is what a same-site post sends under
    ``Referrer-Policy: no-referrer``, so it alone is no reason to refuse."""
    client = TestClient(app, follow_redirects=False)
    form = {"username": "viewer", "password": PASSWORD}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        assert client.post("/ui/login", data=form, headers=headers).status_code == 403
    for headers in (
        {"Sec-Fetch-Site": "same-origin", "Origin": "null"},
        {"Origin": "null"},
        {"Origin": "http://testserver"},
    ):
        assert client.post("/ui/login", data=form, headers=headers).status_code == 303


def test_logout_needs_the_csrf_token_and_ends_the_session(app: FastAPI) -> None:
    client, csrf = sign_in(app, "viewer")
    assert client.post("/ui/logout").status_code == 403
    answer = client.post("/ui/logout", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    client.cookies.clear()
    assert client.get("/ui/").status_code == 303


def test_a_wrong_password_is_refused_and_audited_then_rate_limited(
    app: FastAPI,
    web_context: WebContext,  # noqa: F811
) -> None:
    client = TestClient(app, follow_redirects=False)
    limit = web_context.settings.web.login_attempts_per_minute
    for _ in range(limit):
        wrong = client.post("/ui/login", data={"username": "operator", "password": "nope"})
        assert wrong.status_code == 401 and 'data-testid="login-error"' in wrong.text
        assert "dan_session" not in wrong.headers.get("set-cookie", "")
    blocked = client.post("/ui/login", data={"username": "operator", "password": PASSWORD})
    assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
    assert web_context.audit_log is not None
    log = web_context.audit_log.read_text()
    assert log.count("operator") >= limit + 1  # each failure, the blocked one too


def test_parallel_wrong_logins_reach_the_password_check_at_most_the_limit(
    app: FastAPI,
    web_context: WebContext,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = web_context.settings.web.login_attempts_per_minute
    checked: list[str] = []
    lock = threading.Lock()
    real = accounts.verify_login

    def slow_check(*args: object) -> tuple[str, str] | None:
        with lock:
            checked.append("x")
        threading.Event().wait(0.3)  # all tries are in flight before any is answered
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(accounts, "verify_login", slow_check)
    start = threading.Barrier(limit + 1)
    codes: list[int] = []

    def wrong_login() -> None:
        client = TestClient(app, follow_redirects=False)
        start.wait(timeout=10)
        answer = client.post("/ui/login", data={"username": "operator", "password": "nope"})
        with lock:
            codes.append(answer.status_code)

    threads = [threading.Thread(target=wrong_login) for _ in range(limit + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(checked) <= limit
    assert sorted(codes) == [401] * limit + [429]


def test_a_flood_of_made_up_user_names_does_not_lift_the_limit_of_an_address(
    app: FastAPI,
    web_context: WebContext,  # noqa: F811
) -> None:
    limit = web_context.settings.web.login_attempts_per_minute
    app.state.login_limiter = LoginLimiter(limit, max_keys=40)
    client = TestClient(app, follow_redirects=False)
    for _ in range(limit):
        assert (
            client.post("/ui/login", data={"username": "operator", "password": "nope"}).status_code
            == 401
        )
    for n in range(60):  # each a new user name, from the same address and from a new one
        flood = TestClient(app, follow_redirects=False, client=(f"10.0.0.{n + 1}", 1000))
        for who in (client, flood):
            who.post("/ui/login", data={"username": f"nobody{n}-{id(who)}", "password": "x"})
    for who in (client, TestClient(app, follow_redirects=False, client=("10.9.9.9", 1))):
        again = who.post("/ui/login", data={"username": "operator", "password": PASSWORD})
        assert again.status_code == 429, again.text[:200]
    other = client.post("/ui/login", data={"username": "admin", "password": PASSWORD})
    assert other.status_code == 429  # the address used up its tries too


def test_every_screen_renders_for_a_viewer_without_patient_data(
    app: FastAPI, seeded: list[SeededStudy]
) -> None:
    client, _ = sign_in(app, "viewer")
    study = seeded[0].study_instance_uid
    paths = [
        *SCREENS,
        *FRAGMENTS,
        f"/ui/studies/{study}",
        f"/ui/fragments/studies/{study}",
        f"/ui/destinations/{DESTINATION}",
        f"/ui/fragments/destinations/{DESTINATION}",
        "/ui/studies?state=done&model=ct_test&calling_ae=MODALITY",
    ]
    for path in paths:
        answer = client.get(path)
        assert answer.status_code in (200, 286), (path, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
        assert phi_canaries_in(answer.text) == [], path
        assert 'data-testid="patient-name"' not in answer.text, path
        assert "<script>alert" not in answer.text and "<b>" not in answer.text, path
        assert "style=" not in answer.text and "<script>" not in answer.text.replace(
            '<script src="/static/htmx.min.js" defer></script>', ""
        ), path
    assert client.get("/ui/audit").status_code == 403
    bad = client.get("/ui/studies", params={"date_from": "2026-13-xx"})
    assert bad.status_code == 400 and 'data-testid="search-error"' in bad.text
    listing = client.get("/ui/studies").text
    assert (
        'data-testid="study-row"' in listing and "CT chest &lt;i&gt;peer text&lt;/i&gt;" in listing
    )
    rules = client.get("/ui/rules").text
    assert "chest &lt;b&gt;ct&lt;/b&gt;" in rules and 'data-testid="explain-submit"' not in rules
    failures = client.get("/ui/failures").text
    assert failures.count('data-testid="failure-group"') == 2
    assert (
        "connection refused &lt;script&gt;" in failures
        and 'data-testid="retry-all"' not in failures
    )


def test_a_study_timeline_shows_each_step_and_the_result_preview(
    app: FastAPI, seeded: list[SeededStudy]
) -> None:
    client, _ = sign_in(app, "operator")
    done, failed = seeded
    page = client.get(f"/ui/studies/{done.study_instance_uid}").text
    assert re.search(r'data-testid="timeline-state">delivered<', page)
    assert f'data-testid="job-{done.job_pk}-state">done<' in page
    assert f'src="/api/v1/results/{done.result_pk}/preview.png"' in page
    assert f'data-testid="preview-{done.result_pk}"' in page
    assert f'data-testid="delivery-{done.result_pk}-{DESTINATION}">delivered<' in page
    assert f'data-testid="rerun-{done.job_pk}"' in page and 'data-testid="event-history"' in page
    assert "hx-get=" not in page  # at rest: nothing to refresh
    assert f'data-testid="patient-name">{CANARY_PATIENT_NAME}<' in page
    assert CANARY_PATIENT_ID in page and CANARY_BIRTH_DATE in page
    other = client.get(f"/ui/studies/{failed.study_instance_uid}").text
    assert re.search(r'data-testid="timeline-state">failed<', other)
    assert "input check failed: 3 slices &lt;b&gt;too few&lt;/b&gt;" in other
    assert client.get("/ui/studies/1.2.999").status_code == 404
    assert client.get("/ui/studies/..%2F..%2Fetc").status_code == 404
    listing = client.get("/ui/studies").text
    assert f'data-testid="patient-id">{CANARY_PATIENT_ID}<' in listing


def test_action_forms_are_refused_to_viewers_and_without_the_csrf_token(
    app: FastAPI, seeded: list[SeededStudy]
) -> None:
    job = str(seeded[0].job_pk)
    viewer, viewer_csrf = sign_in(app, "viewer")
    assert (
        viewer.post("/ui/actions/rerun", data={"job": job, "csrf": viewer_csrf}).status_code == 403
    )
    operator, csrf = sign_in(app, "operator")
    for path, data in [
        ("/ui/actions/rerun", {"job": job}),
        ("/ui/actions/retry", {"kind": "all"}),
        ("/ui/actions/pause", {"kind": "model", "name": MODEL}),
    ]:
        assert operator.post(path, data=data).status_code == 403, path
        assert operator.post(path, data=data | {"csrf": "not-it"}).status_code == 403, path
    answer = operator.post("/ui/actions/rerun", data={"job": job, "csrf": csrf})
    assert answer.status_code == 303


def test_an_operator_acts_from_the_screens_and_sees_the_outcome(
    app: FastAPI,
    seeded: list[SeededStudy],
    web_context: WebContext,  # noqa: F811
) -> None:
    client, csrf = sign_in(app, "operator")
    done = seeded[0]
    back = f"/ui/studies/{done.study_instance_uid}"

    def act(action: str, /, **data: str) -> str:
        answer = client.post(f"/ui/actions/{action}", data={"csrf": csrf, "back": back} | data)
        return flash_after(client, answer)

    assert re.match(
        rf"Job {done.job_pk} is run again as job \d+\.", act("rerun", job=str(done.job_pk))
    )
    page = client.get(back).text
    new_job = max(int(pk) for pk in re.findall(r'data-testid="job-(\d+)-revision"', page))
    assert f'data-testid="job-{new_job}-revision">revision 1<' in page
    assert 'data-kind="action"' in page and "hx-get=" in page  # queued again: refreshing
    fragment = client.get(
        f"/ui/fragments/studies/{done.study_instance_uid}",
        headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver{back}?flash=x"},
    )
    assert fragment.status_code == 200 and f'name="back" value="{back}"' in fragment.text
    assert f"Job {new_job} is cancelled" in act("cancel", job=str(new_job))
    assert "Not done" in act("cancel", job=str(new_job))  # not queued any more
    sent = act("resend", result=str(done.result_pk), destination=DESTINATION)
    assert sent.startswith(f"Sending result {done.result_pk} to {DESTINATION} again")
    assert "Not found" in act("resend", result=str(done.result_pk), destination="X@h:1")
    assert act("pause", kind="model", name=MODEL) == f"The model {MODEL} is paused."
    assert f'data-testid="resume-model-{MODEL}"' in client.get("/ui/rules").text
    assert act("resume", kind="model", name=MODEL) == f"The model {MODEL} is resumed."
    assert "is paused" in act("pause", kind="destination", name=DEAD_DESTINATION)
    echo = act("echo", destination=DESTINATION)
    assert echo.startswith(f"C-ECHO to {DESTINATION} failed")  # no C-ECHO in this process
    assert act("retry", kind="deliveries", group="1", cause="x").startswith("Retrying 0 deliveries")
    assert act("retry", kind="all") == "Retrying 1 jobs, 1 deliveries."

    receiving = "1.2.826.0.1.3680043.10.9.7.1"
    index_instance(
        web_context.sessions,
        InstanceRecord(
            sop_instance_uid=f"{receiving}.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            study_instance_uid="1.2.826.0.1.3680043.10.9.7",
            series_instance_uid=receiving,
            path="in/7/1.dcm",
            size=1,
            sha256="7" * 64,
            received_at=web_context.clock(),
            series=SeriesAttrs(modality="CT"),
        ),
    )
    study_page = client.get("/ui/studies/1.2.826.0.1.3680043.10.9.7").text
    assert f'data-testid="force-complete-series-{receiving}"' in study_page
    assert act("force-complete", series=receiving) == "1 series marked complete."

    explained = client.post(
        "/ui/actions/explain", data={"csrf": csrf, "study": done.study_instance_uid}
    )
    assert explained.status_code == 200 and 'data-testid="explain-output"' in explained.text


def test_the_studies_page_and_its_fragment_search_alike(
    app: FastAPI, seeded: list[SeededStudy]
) -> None:
    client, _ = sign_in(app, "viewer")
    second = seeded[1].study_instance_uid
    search = {"accession": "ACC2", "model": MODEL, "state": "done", "calling_ae": "MODALITY"}
    for path in ("/ui/studies", "/ui/fragments/studies"):
        rows = re.findall(r'data-testid="study-row" data-uid="([^"]+)"', client.get(path).text)
        assert sorted(rows) == sorted(s.study_instance_uid for s in seeded), path
        found = client.get(path, params=search).text
        assert re.findall(r'data-testid="study-row" data-uid="([^"]+)"', found) == [second], path
        none = client.get(path, params={"date_from": "2030-01-01"}).text
        assert 'data-testid="study-row"' not in none, path
    assert client.get("/ui/fragments/studies", params={"model": "x" * 65}).status_code == 422


def test_the_explain_form_takes_only_a_study_uid(app: FastAPI, seeded: list[SeededStudy]) -> None:
    client, csrf = sign_in(app, "operator")
    for text in ("1.2.3; drop", "<b>1.2</b>", "1..2", "1.2.", "1." * 40 + "1", " "):
        answer = client.post("/ui/actions/explain", data={"csrf": csrf, "study": text})
        assert answer.status_code == 400, text
        assert 'data-testid="explain-error"' in answer.text, text
        assert 'data-testid="explain-output"' not in answer.text, text
        assert "<b>1.2</b>" not in answer.text
    good = client.post(
        "/ui/actions/explain", data={"csrf": csrf, "study": f" {seeded[0].study_instance_uid} "}
    )
    assert good.status_code == 200 and 'data-testid="explain-output"' in good.text
    assert 'data-testid="explain-error"' not in good.text


def test_the_rules_screen_cuts_a_big_rules_file_and_names_an_unreadable_one(
    app: FastAPI,
    web_context: WebContext,  # noqa: F811
) -> None:
    client, _ = sign_in(app, "viewer")
    rules = web_context.settings.path(web_context.settings.route.rules_file)
    assert "chest &lt;b&gt;ct&lt;/b&gt;" in client.get("/ui/rules").text
    rules.write_text(RULES_TEXT + "#" * (2 * 1024 * 1024), "utf-8")
    big = client.get("/ui/rules")
    assert big.status_code == 200 and len(big.text) < 1024 * 1024 + 100_000
    assert re.search(r'data-testid="rules-file">[^<]*larger than 1 MiB', big.text)
    rules.unlink()
    gone = client.get("/ui/rules")
    assert gone.status_code == 200
    assert re.search(r'data-testid="rules-file">[^<]*cannot read', gone.text)
    assert 'data-testid="rules-text"></pre>' in gone.text


def test_a_viewer_is_told_why_a_preview_may_not_show(
    app: FastAPI, seeded: list[SeededStudy]
) -> None:
    done = seeded[0]
    preview = re.compile(rf'<img id="preview-{done.result_pk}"[^>]*>')
    viewer, _ = sign_in(app, "viewer")
    shown = preview.search(viewer.get(f"/ui/studies/{done.study_instance_uid}").text)
    assert shown is not None and f'alt="{VIEWER_PREVIEW_ALT}"' in shown[0]
    assert 'class="preview"' in shown[0]
    operator, _ = sign_in(app, "operator")
    own = preview.search(operator.get(f"/ui/studies/{done.study_instance_uid}").text)
    assert own is not None and f'alt="Preview of result {done.result_pk}"' in own[0]
    css = viewer.get("/static/style.css").text
    rule = re.search(r"img\.preview \{([^}]*)\}", css)
    assert rule is not None  # a refused preview keeps the box's width, its alt text readable
    for needed in ("max-width: 100%", "width: 32rem", "overflow: hidden", "color: #"):
        assert needed in rule[1], needed


def test_a_flash_message_shows_only_with_the_sessions_signature(app: FastAPI) -> None:
    client, _ = sign_in(app, "operator")
    forged = client.get(
        "/ui/", params={"flash": "Call 555-0100", "kind": "error", "fsig": "0" * 32}
    )
    assert "555-0100" not in forged.text


def test_the_audit_screen_is_for_admins(app: FastAPI, seeded: list[SeededStudy]) -> None:
    operator, _ = sign_in(app, "operator")
    assert operator.get("/ui/audit").status_code == 403
    admin, _ = sign_in(app, "admin")
    page = admin.get("/ui/audit", params={"user": "operator"})
    assert page.status_code == 200 and 'data-testid="audit-row"' in page.text
    assert 'data-testid="nav-audit"' in page.text
