"""Hostile input on the web surface of a running node (DICOM listener and HTTP service):
refused and audited callers, CSRF without the token, path traversal and SQL
meta-characters in IDs and filters, oversized bodies and headers, and slow clients, while
``/livez`` and a DICOM C-ECHO keep answering. Requests go over raw sockets so nothing
normalises them on the way.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_ai_node.store import accounts

from .web_seed import WebNode, web_node

pytestmark = pytest.mark.integration

SETTINGS_MARKERS = (b"[dicom]", b"ae_title", b"root:x:0:0", b"database_url")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    with web_node(tmp_path_factory.mktemp("web-hostile"), dicom=True) as node:
        yield node


def _port(web: WebNode) -> int:
    return int(web.url.rsplit(":", 1)[1])


def raw(web: WebNode, head: bytes, body: bytes = b"", timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are; the status and the whole answer."""
    with socket.create_connection(("127.0.0.1", _port(web)), timeout=timeout_s) as sock:
        sock.sendall(head + body)
        chunks, deadline = [], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


def request(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_traversal_and_sql_in_ids_and_filters_are_4xx_problems(web: WebNode) -> None:
    auth = {"Authorization": f"Bearer {web.tokens['operator']}"}
    targets = [
        "/api/v1/studies/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/studies/../../etc/passwd",
        "/static/../../settings.py",
        "/static/..%2F..%2Fsettings.py",
        "/static/%2e%2e/%2e%2e/node.toml",
        "/api/v1/studies/1'%20OR%201=1%20--",
        "/api/v1/jobs/1%20OR%201=1",
        "/api/v1/destinations/'%20OR%201=1%20--",
        "/api/v1/studies?accession=%27%20OR%201%3D1%20--",
        "/api/v1/jobs?state=%27%3B%20DROP%20TABLE%20job%3B%20--",
        "/api/v1/studies?cursor=%27%20OR%201%3D1%20--",
        "/ui/studies?accession=%27%20OR%201%3D1%20--",
    ]
    for target in targets:
        status, answer = raw(web, request("GET", target, auth))
        assert 200 <= status < 500, (target, answer[:300])
        assert not any(m in answer for m in SETTINGS_MARKERS), target
        if status >= 400 and target.startswith("/api/"):
            assert b"application/problem+json" in answer, target
        if "OR%201" in target and "?" in target and target.startswith("/api/"):
            assert status == 400 or b'"items":[]' in answer, target  # nothing matches
    status, _ = raw(web, request("GET", "/api/v1/jobs", auth))
    assert status == 200  # the job table is still there


def test_unauthenticated_wrong_role_and_csrf_less_requests_are_refused_and_audited(
    web: WebNode,
) -> None:
    viewer = {"Authorization": f"Bearer {web.tokens['viewer']}"}
    assert raw(web, request("POST", "/api/v1/failures/retry"))[0] == 401
    assert raw(web, request("POST", "/api/v1/models/x/pause", viewer))[0] == 403
    assert raw(web, request("GET", "/api/v1/audit", viewer))[0] == 403
    session, csrf = accounts.new_session(web.node.db.session, "olga", "operator", web.clock(), 60)
    cookie = {"Cookie": f"dan_session={session}", "Content-Length": "0"}
    target = f"/api/v1/jobs/{web.job_done}/rerun"
    assert raw(web, request("POST", target, cookie))[0] == 403
    wrong = {**cookie, "X-CSRF-Token": "x" * len(csrf)}
    assert raw(web, request("POST", target, wrong))[0] == 403
    form = {"Cookie": f"dan_session={session}", "Content-Type": "application/x-www-form-urlencoded"}
    body = f"job_id={web.job_done}&back=/ui/".encode()
    status, _ = raw(
        web, request("POST", "/ui/actions/rerun", {**form, "Content-Length": str(len(body))}), body
    )
    assert status == 403
    assert raw(web, request("POST", target, {**cookie, "X-CSRF-Token": csrf}))[0] not in (401, 403)
    text = web.audit_text()
    assert text.count("Use of Restricted Function") >= 5


def test_oversized_bodies_and_headers_are_refused(web: WebNode) -> None:
    auth = {"Authorization": f"Bearer {web.tokens['operator']}", "Content-Type": "application/json"}
    limit = web.node.settings.web.max_body_kb * 1024
    big = b"{" + b" " * (limit + 10) + b"}"
    status, _ = raw(
        web,
        request("POST", "/api/v1/failures/retry", {**auth, "Content-Length": str(len(big))}),
        big,
    )
    assert status == 413


def test_oversized_headers_are_refused(web: WebNode) -> None:
    huge = {f"X-Junk-{i}": "j" * 1000 for i in range(20)}
    status, _ = raw(web, request("GET", "/livez", huge))
    assert status == 431


def test_an_oversized_chunked_body_is_413(web: WebNode) -> None:
    auth = {"Authorization": f"Bearer {web.tokens['operator']}", "Content-Type": "application/json"}
    limit = web.node.settings.web.max_body_kb * 1024
    head = request("POST", "/api/v1/failures/retry", {**auth, "Transfer-Encoding": "chunked"})
    chunks = b"".join(b"%x\r\n%s\r\n" % (8192, b" " * 8192) for _ in range(limit // 8192 + 2))
    status, _ = raw(web, head, chunks + b"0\r\n\r\n")
    assert status == 413


def test_slow_clients_do_not_stop_http_or_dicom(web: WebNode) -> None:
    slow: list[socket.socket] = []
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", _port(web)), timeout=5)
            slow.append(sock)
        line = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n"
        deadline = time.monotonic() + 3.0
        sent = 0
        while time.monotonic() < deadline and sent < len(line):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(line[sent : sent + 1])
            sent += 1
            started = time.monotonic()
            status, _ = raw(web, request("GET", "/livez"), timeout_s=5)
            assert status == 200 and time.monotonic() - started < 1.0
            time.sleep(0.1)
        ae = AE(ae_title="HOSTILE")
        ae.add_requested_context(Verification)
        started = time.monotonic()
        assoc = ae.associate("127.0.0.1", web.node.scp.port, ae_title="AI_NODE")
        try:
            assert assoc.is_established
            assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
            assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            answer = assoc.send_c_echo()
            assert answer.Status == 0x0000
        finally:
            assoc.release()
        assert time.monotonic() - started < 5.0
    finally:
        for sock in slow:
            sock.close()
