"""STOW-RS ingress against hostile and broken requests, over a real socket: every one is
answered with the status PS3.18 10.5.3 gives it, and none leaves an instance row, an
instance file or a temp file behind. Also: who may store, and that the 64 KiB body limit
still holds on every other route.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.store import accounts
from dicom_ai_node.testing.series import make_ct_series
from dicom_ai_node.web.context import WebContext
from dicom_ai_node.web.stow_response import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    STUDY_UID_MISMATCH,
)

from ..crash.checks import dataset_offset
from .stow_support import (
    BOUNDARY,
    failed_of,
    multipart,
    part10,
    post_stow,
    referenced_of,
    refusals,
    snapshot,
)
from .web_seed import WebNode, web_node

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    with web_node(tmp_path_factory.mktemp("stow-hostile")) as node:
        _, text = accounts.add_token(
            node.node.db.session, "MODALITY", "sender", None, "", node.clock()
        )
        node.tokens["sender"] = text
        yield node


@pytest.fixture(scope="module")
def series() -> list[Dataset]:
    _, datasets = make_ct_series(3, 64, 64, (2.5, 2.8, 2.8), seed=4711)
    return datasets


def _state(web: WebNode) -> tuple[list[tuple[str, str]], list[str]]:
    settings = web.node.settings
    return snapshot(web.node.db.session, settings.path(settings.storage.root))


def _unchanged(web: WebNode, before: tuple[list[tuple[str, str]], list[str]]) -> None:
    assert _state(web) == before, "the request stored something"


def _ctx(web: WebNode) -> WebContext:
    assert web.app is not None
    ctx = web.app.state.ctx
    assert isinstance(ctx, WebContext)
    return ctx


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        f"multipart/related; boundary={BOUNDARY}",  # no type parameter (Orthanc: 415 too)
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
        f'multipart/form-data; type="application/dicom"; boundary={BOUNDARY}',
        "",
    ],
)
def test_other_content_types_are_415(
    web: WebNode, series: list[Dataset], content_type: str
) -> None:
    before = _state(web)
    answer = post_stow(
        web.url, web.tokens["sender"], multipart([part10(series[0])]), content_type=content_type
    )
    assert answer.status_code == 415, answer.text
    assert answer.headers["content-type"].startswith("application/dicom+json")
    _unchanged(web, before)


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"',  # no boundary
        'multipart/related; type="application/dicom"; boundary=""',
        f'multipart/related; type="application/dicom"; boundary={"b" * 71}',
    ],
)
def test_missing_or_invalid_boundaries_are_400(
    web: WebNode, series: list[Dataset], content_type: str
) -> None:
    before = _state(web)
    answer = post_stow(
        web.url, web.tokens["sender"], multipart([part10(series[0])]), content_type=content_type
    )
    assert answer.status_code == 400, answer.text
    _unchanged(web, before)


def test_malformed_and_truncated_bodies_store_nothing(web: WebNode, series: list[Dataset]) -> None:
    good = multipart([part10(ds) for ds in series])
    cases = {
        "no boundary at all": b"just some bytes, no multipart here\r\n",
        "another boundary": multipart([part10(series[0])], boundary="something-else"),
        "truncated in the last part": good[: len(good) - 5000],
        "truncated before the closing boundary": good[: good.rindex(b"--" + BOUNDARY.encode())],
        "empty body": b"",
        "no parts": f"--{BOUNDARY}--\r\n".encode(),
        "garbage part header": f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
    }
    before = _state(web)
    for why, body in cases.items():
        answer = post_stow(web.url, web.tokens["sender"], body)
        assert answer.status_code == 400, (why, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/dicom+json"), why
        _unchanged(web, before)


def test_parts_that_are_not_dicom_are_refused(web: WebNode, series: list[Dataset]) -> None:
    before = _state(web)
    not_dicom = [b"", b"hello", b"\0" * 128 + b"DICM" + b"\xff" * 40, part10(series[0])[:600]]
    answer = post_stow(web.url, web.tokens["sender"], multipart(not_dicom))
    assert answer.status_code == 409, answer.text
    assert failed_of(answer) == [("", CANNOT_UNDERSTAND)] * 3 + [
        (str(series[0].SOPInstanceUID), CANNOT_UNDERSTAND)
    ]
    assert referenced_of(answer) == []
    # parts of another media type: 415
    answer = post_stow(
        web.url, web.tokens["sender"], multipart([b"{}"], part_type="application/dicom+json")
    )
    assert answer.status_code == 415, answer.text
    _unchanged(web, before)


def test_a_wrong_study_in_the_url_is_409(web: WebNode, series: list[Dataset]) -> None:
    before = _state(web)
    body = multipart([part10(ds) for ds in series])
    answer = post_stow(web.url, web.tokens["sender"], body, study="1.2.3.4.5")
    assert answer.status_code == 409, answer.text
    assert failed_of(answer) == [(str(ds.SOPInstanceUID), STUDY_UID_MISMATCH) for ds in series]
    assert post_stow(web.url, web.tokens["sender"], body, study="1.2.x").status_code == 400
    _unchanged(web, before)


def test_file_meta_that_disagrees_with_the_data_set_is_refused(
    web: WebNode, series: list[Dataset]
) -> None:
    data = bytearray(part10(series[0]))
    uid = str(series[0].SOPInstanceUID).encode()
    at = data.index(uid)  # in the file meta, before the data set
    assert at < dataset_offset(bytes(data))
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    data[at : at + len(uid)] = other
    before = _state(web)
    answer = post_stow(web.url, web.tokens["sender"], multipart([bytes(data)]))
    assert answer.status_code == 409
    assert failed_of(answer) == [(other.decode(), DATASET_DOES_NOT_MATCH_SOP_CLASS)]
    _unchanged(web, before)


def test_oversized_parts_and_too_many_parts_store_nothing(
    web: WebNode, series: list[Dataset]
) -> None:
    assert web.app is not None
    ctx = _ctx(web)
    assert ctx.stow is not None
    small = dataclasses.replace(ctx.stow, max_instance_bytes=4096, max_parts=2)
    web.app.state.ctx = dataclasses.replace(ctx, stow=small)
    try:
        before = _state(web)
        answer = post_stow(web.url, web.tokens["sender"], multipart([part10(series[0])]))
        assert answer.status_code == 409, answer.text  # 64x64x2 bytes of pixels > 4 KiB
        assert [f[1] for f in failed_of(answer)] == [OUT_OF_RESOURCES]
        answer = post_stow(web.url, web.tokens["sender"], multipart([b"x"] * 3))
        assert answer.status_code == 413, answer.text
        _unchanged(web, before)
    finally:
        web.app.state.ctx = ctx


def test_one_good_and_one_broken_part_is_202_and_the_good_one_kept(
    web: WebNode, series: list[Dataset]
) -> None:
    """Unlike Orthanc (400 yet the good one stored), the answer says what was kept."""
    answer = post_stow(web.url, web.tokens["sender"], multipart([part10(series[1]), b"broken"]))
    assert answer.status_code == 202, answer.text
    assert referenced_of(answer) == [str(series[1].SOPInstanceUID)]
    assert failed_of(answer) == [("", CANNOT_UNDERSTAND)]
    rows, files = _state(web)
    assert str(series[1].SOPInstanceUID) in {u for u, _ in rows}
    assert any(str(series[1].SOPInstanceUID) in f for f in files)
    assert not any(f.startswith("tmp/") for f in files)
    again = post_stow(web.url, web.tokens["sender"], multipart([part10(series[1])]))
    assert again.status_code == 200, again.text  # idempotent, like a C-STORE sent twice
    assert _state(web) == (rows, files)


def test_only_a_sender_may_store_and_a_sender_may_do_nothing_else(
    web: WebNode, series: list[Dataset]
) -> None:
    before = _state(web)
    body = multipart([part10(series[2])])
    answer = httpx.post(f"{web.url}/dicom-web/studies", content=body, timeout=30)
    assert answer.status_code == 401
    for role in ("viewer", "operator", "admin"):
        assert post_stow(web.url, web.tokens[role], body).status_code == 403, role
    _unchanged(web, before)
    refused = refusals(web.audit_text())
    assert any("POST /dicom-web/studies refused for an anonymous client" in r for r in refused)
    assert any(
        "POST /dicom-web/studies refused for token t-admin: the sender role is required" in r
        for r in refused
    )
    sender = {"Authorization": f"Bearer {web.tokens['sender']}"}
    for path in ("/api/v1/status", "/api/v1/studies", "/api/v1/openapi.json", "/ui/"):
        answer = httpx.get(f"{web.url}{path}", headers=sender, timeout=30)
        assert answer.status_code == 403, path


def test_the_body_limit_is_lifted_for_stow_only(web: WebNode) -> None:
    big = b"x" * (200 * 1024)
    headers = {**{"Authorization": f"Bearer {web.tokens['operator']}"}, "X-CSRF-Token": "-"}
    answer = httpx.post(f"{web.url}/api/v1/failures/retry", content=big, headers=headers)
    assert answer.status_code == 413
    body = multipart([big])  # 200 KiB: past the 64 KiB of other routes, read and refused
    answer = post_stow(web.url, web.tokens["sender"], body)
    assert answer.status_code == 409 and failed_of(answer) == [("", CANNOT_UNDERSTAND)]


def test_nothing_is_left_in_tmp(web: WebNode, tmp_path: Path) -> None:
    _, files = _state(web)
    assert not [f for f in files if f.startswith("tmp/")]


def test_an_unexpected_error_while_storing_leaves_no_temp_file(
    web: WebNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected into the second store: no 2xx, the first instance stays stored and
    indexed, and no part's temp file is left behind."""
    _, fresh = make_ct_series(3, 32, 32, (2.5, 2.8, 2.8), seed=4712)
    stow = _ctx(web).stow
    assert stow is not None
    ingest = type(stow.ingest)
    real, calls = ingest.store, []

    def store(self: object, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected fault")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "store", store)
    answer = post_stow(web.url, web.tokens["sender"], multipart([part10(d) for d in fresh]))
    monkeypatch.undo()
    assert answer.status_code == 500
    rows, files = _state(web)
    assert str(fresh[0].SOPInstanceUID) in {u for u, _ in rows}
    assert not {str(d.SOPInstanceUID) for d in fresh[1:]} & {u for u, _ in rows}
    assert not any(f.startswith("tmp/") for f in files), files
