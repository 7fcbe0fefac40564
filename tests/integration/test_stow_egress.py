"""STOW-RS egress (issue 17): results stored in a DICOMweb archive by ``send.stow``.

Real peers only: Debian's Orthanc with its DICOMweb plugin (its 415 without the ``type``
parameter, 409 for a wrong study, 400 for a batch with one broken part yet the good one
stored, an outage and its return), and a small HTTP server on 127.0.0.1 (``http.server``
in a thread) standing in for archives that answer 202 with warnings, a bare 400, 503,
or require basic or bearer credentials, or speak HTTPS with a site CA. The delivery
loop's own retries (``Deliverer`` with a ``protocol = "dicomweb"`` destination) are
shown through an outage of Orthanc: only the instances that failed are sent again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.parser
import io
import json
import logging
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_ai_node.dicomweb import DICOM_JSON, STOW_CONTENT_TYPE
from dicom_ai_node.domain import DeliveryState, Measurement, ModelOutput
from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.errors import ConfigError, DeliveryError
from dicom_ai_node.infer.findings.measure import ML, MM3_PER_ML, VOLUME
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.send.deliver import Deliverer
from dicom_ai_node.send.stow import WebPeer, stow_files, stow_plan
from dicom_ai_node.send.stow_parts import MAX_ANSWER_BYTES, StowPart, plan_part
from dicom_ai_node.settings import NodeSettings, SendSettings
from dicom_ai_node.settings_sections import Destination
from dicom_ai_node.store.db import Database, as_utc
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.testing.series import make_ct_series, write_series

from ..conftest import REPO, require_exe
from ..orthanc import Orthanc, OrthancFactory
from .test_send_outage import Clock, deliveries, finish_job

pytestmark = [pytest.mark.integration, pytest.mark.interop, pytest.mark.timeout(120)]

MANIFEST = load_manifest(REPO / "models" / "ct_chest_lungs" / "model.toml")
PROCESSING_FAILURE = 0x0110  # PS3.18 10.5.3 Failure Reason (PS3.7 C.4)
COERCION = 0xB000  # PS3.4 B.2.3 Warning: Coercion of Data Elements
SECRET = "s3cr3t-Canary-7f1e"


# -- instances ----------------------------------------------------------------------------------
def results_like(folder: Path, seed: int = 0, slices: int = 6) -> tuple[list[Path], str]:
    """A small CT series and its SEG + SR (real highdicom objects) as files; the study UID."""
    phantom, source = make_ct_series(slices, 48, 48, spacing_mm=(5.0, 5.0, 5.0), seed=seed)
    lungs = tuple(label for label in MANIFEST.labels if not label.instances)
    voxel_ml = float(np.prod(phantom.spacing_mm)) / MM3_PER_ML
    output = ModelOutput(
        labels=lungs,
        label_map=phantom.labels,
        measurements=tuple(
            Measurement(
                lab.value, VOLUME, float((phantom.labels == lab.value).sum() * voxel_ml), ML
            )
            for lab in lungs
        ),
    )
    algorithm = MANIFEST.algorithm(device_uid(MANIFEST.name, MANIFEST.version))
    when = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    made = encode_results(source, output, algorithm, f"stow/{seed}", content_datetime=when)
    return write_series([*source, *made], folder), str(source[0].StudyInstanceUID)


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def truncated(path: Path, folder: Path) -> Path:
    """A damaged copy: its header (and UIDs) read, its pixel data cut short."""
    folder.mkdir(parents=True, exist_ok=True)
    broken = folder / f"broken-{path.name}"
    data = path.read_bytes()
    broken.write_bytes(data[: len(data) - 500])
    return broken


# -- a small archive on 127.0.0.1 ---------------------------------------------------------------
@dataclass
class Seen:
    """One request the test archive received."""

    path: str
    headers: dict[str, str]
    length: int
    parts: list[Dataset]


Answer = tuple[int, Any]  # status, JSON body (dict) or raw bytes


def stow_json(
    stored: list[tuple[str, int | None]], failed: list[tuple[str, int]]
) -> dict[str, Any]:
    """A STOW-RS answer data set in DICOM JSON (PS3.18 10.5.3, F.2)."""

    def item(uid: str, key: str | None, code: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"00081155": {"vr": "UI", "Value": [uid]}}
        if key and code is not None:
            out[key] = {"vr": "US", "Value": [code]}
        return out

    return {
        "00081199": {"vr": "SQ", "Value": [item(u, "00081196", w) for u, w in stored]},
        "00081198": {"vr": "SQ", "Value": [item(u, "00081197", f) for u, f in failed]},
    }


def all_stored(seen: Seen) -> Answer:
    return 200, stow_json([(str(ds.SOPInstanceUID), None) for ds in seen.parts], [])


def read_parts(content_type: str, body: bytes) -> list[Dataset]:
    """The DICOM parts of a multipart/related body (RFC 2387)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + body)
    out: list[Dataset] = []
    for part in message.walk():
        if part.get_content_type() == "application/dicom":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(dcmread(io.BytesIO(payload), stop_before_pixels=True))
    return out


@dataclass
class Archive:
    """An HTTP server in a thread that answers each STOW-RS request with ``answer``."""

    answer: Callable[[Seen], Answer] = all_stored
    require: str | None = None  # the exact Authorization header wanted
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        archive = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                ctype = self.headers.get("Content-Type", "")
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, length, read_parts(ctype, body))
                archive.seen.append(seen)
                if archive.require and self.headers.get("Authorization") != archive.require:
                    status, payload = 401, b'{"error": "unauthorized"}'
                else:
                    status, payload = archive.answer(seen)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", DICOM_JSON)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def archive() -> Iterator[Callable[..., Archive]]:
    started: list[Archive] = []

    def start(**kwargs: Any) -> Archive:
        started.append(Archive(**kwargs))
        return started[-1]

    yield start
    for a in started:
        a.stop()
    assert not any(a.thread.is_alive() for a in started)


@pytest.fixture
def orthanc(orthanc_factory: OrthancFactory) -> Orthanc:
    return orthanc_factory.start()


def web(orthanc: Orthanc) -> WebPeer:
    return WebPeer(f"{orthanc.url}/dicom-web")


def wado_instance(orthanc: Orthanc, study: str, uid: str) -> Dataset:
    """WADO-RS retrieve of one instance (PS3.18 10.4), its single part parsed."""
    found = json.loads(
        orthanc.request("GET", f"/dicom-web/studies/{study}/instances?SOPInstanceUID={uid}")
    )
    series = found[0]["0020000E"]["Value"][0]
    path = f"/dicom-web/studies/{study}/series/{series}/instances/{uid}"
    with httpx.Client(timeout=30) as client:
        r = client.get(orthanc.url + path, headers={"Accept": STOW_CONTENT_TYPE})
    assert r.status_code == 200, r.text[:300]
    head = f"Content-Type: {r.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + r.content)
    payload = next(p for p in message.walk() if p.get_content_type() == "application/dicom")
    data = payload.get_payload(decode=True)
    assert isinstance(data, bytes)
    return dcmread(io.BytesIO(data))


# -- Orthanc -----------------------------------------------------------------------------------
def test_results_are_stored_in_orthanc_in_bounded_batches_and_read_back_by_wado_rs(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    paths, study = results_like(tmp_path / "in")
    outcomes = stow_files(
        paths, web(orthanc), timeout_s=30, batch_bytes=3 * paths[0].stat().st_size
    )
    assert [o.sop_instance_uid for o in outcomes] == [sop_uid(p) for p in paths]
    assert all(o.delivered and o.status == 0 for o in outcomes), outcomes
    modalities = sorted(s["00080060"]["Value"][0] for s in orthanc.qido_series(study))
    assert modalities == ["CT", "SEG", "SR"], orthanc.tail()
    for path in paths[-2:]:  # the SEG and the SR, as Orthanc serves them by WADO-RS
        sent = dcmread(path)
        back = wado_instance(orthanc, study, str(sent.SOPInstanceUID))
        assert back.SOPClassUID == sent.SOPClassUID
        assert back.get("PixelData") == sent.get("PixelData")
        assert back.SeriesDescription == sent.SeriesDescription
    again = stow_files(paths[-2:], web(orthanc), timeout_s=30)  # a re-send is idempotent
    assert all(o.delivered for o in again), again


def test_orthanc_refuses_stow_without_the_type_parameter_and_stow_files_always_sends_it(
    tmp_path: Path, orthanc: Orthanc, archive: Callable[..., Archive]
) -> None:
    paths, study = results_like(tmp_path / "in", slices=2)
    part = paths[0].read_bytes()
    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n--b1--\r\n"
    url = f"{orthanc.url}/dicom-web/studies/{study}"
    with httpx.Client(timeout=30) as client:
        bare = client.post(
            url, content=body, headers={"Content-Type": "multipart/related; boundary=b1"}
        )
        typed = client.post(
            url, content=body, headers={"Content-Type": f"{STOW_CONTENT_TYPE}; boundary=b1"}
        )
    assert bare.status_code == 415, bare.text
    assert typed.status_code == 200, typed.text
    recorder = archive()
    assert all(o.delivered for o in stow_files(paths, WebPeer(recorder.url), timeout_s=30))
    for seen in recorder.seen:
        assert seen.headers["content-type"].startswith(STOW_CONTENT_TYPE + "; boundary=")
        assert seen.headers["accept"] == DICOM_JSON
        assert "transfer-encoding" not in seen.headers  # a Content-Length, not chunks
    refusing = archive(answer=lambda seen: (415, {"error": "Unsupported media type"}))
    with pytest.raises(DeliveryError, match=r"415.*multipart/related"):
        stow_files(paths, WebPeer(refusing.url), timeout_s=30)


def test_a_wrong_study_is_orthancs_409_with_the_failed_sop_and_its_reason(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    paths, study = results_like(tmp_path / "in", slices=2)
    planned = plan_part(0, paths[-1])
    assert isinstance(planned, StowPart)
    forged = dataclasses.replace(planned, study_instance_uid="1.2.826.0.1.3680043.10.1453.9")
    [outcome] = stow_plan([forged], web(orthanc), timeout_s=30)
    assert outcome.sop_instance_uid == planned.sop_instance_uid
    assert not outcome.delivered
    assert outcome.status == PROCESSING_FAILURE
    assert "409" in outcome.message and "0x0110" in outcome.message, outcome.message
    assert orthanc.study_id(study) is None


def test_orthancs_partial_400_delivers_the_good_part_and_fails_only_the_broken_one(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    paths, _study = results_like(tmp_path / "in", slices=2)
    broken = truncated(paths[1], tmp_path / "damaged")
    outcomes = stow_files([paths[0], broken, paths[-1]], web(orthanc), timeout_s=30)
    assert [o.delivered for o in outcomes] == [True, False, True], outcomes
    assert "400" in outcomes[1].message and "not confirmed" in outcomes[1].message
    stored = {i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.get("/instances?expand")}
    assert stored == {sop_uid(paths[0]), sop_uid(paths[-1])}


def test_an_outage_raises_and_only_the_failed_sops_are_sent_again(
    tmp_path: Path, orthanc_factory: OrthancFactory
) -> None:
    paths, _study = results_like(tmp_path / "in", slices=3)
    broken = truncated(paths[1], tmp_path / "damaged")
    first = orthanc_factory.start()
    port = first.http_port
    outcomes = stow_files([paths[0], broken, *paths[2:]], web(first), timeout_s=10)
    retry = [p for p, o in zip(paths, outcomes, strict=True) if not o.delivered]
    assert retry == [paths[1]], outcomes  # the damaged copy only; the rest are in
    orthanc_factory.stop_all()
    with pytest.raises(DeliveryError, match="cannot connect"):
        stow_files(retry, web(first), timeout_s=5)
    back = orthanc_factory.start(http_port=port)  # the archive returns (a fresh index)
    [again] = stow_files(retry, web(back), timeout_s=30)
    assert again.delivered and again.sop_instance_uid == sop_uid(paths[1])
    assert len(back.get("/instances")) == 1


def test_the_deliverer_sends_again_only_what_failed_through_an_outage(
    tmp_path: Path, orthanc_factory: OrthancFactory, db_url: str
) -> None:
    """A damaged SEG fails (Orthanc's 400 names only good parts) while the SR is stored;
    Orthanc goes down, the SEG is repaired; back up (a fresh index), the next due attempt
    sends the SEG alone, and nothing is ever sent twice."""
    first = orthanc_factory.start()
    dest = f"{first.url}/dicom-web"
    settings = dataclasses.replace(
        NodeSettings(),
        send=SendSettings(
            timeout_s=5.0,
            retry_initial_s=1.0,
            retry_max_s=4.0,
            retry_window_s=60,
            destinations=(Destination(address=dest, protocol="dicomweb"),),
        ),
    )
    db = Database(db_url)
    db.migrate()
    try:
        clock = Clock()
        files = FileStore(tmp_path / "storage")
        deliverer = Deliverer(settings, db, files, clock)
        uids = finish_job(db, files, clock.now, [dest], window_s=60)
        by_uid = {sop_uid(p): p for p in (tmp_path / "storage").rglob("*") if p.is_file()}
        seg = next(by_uid[u] for u in uids if dcmread(by_uid[u]).Modality == "SEG")
        good = seg.read_bytes()
        seg.write_bytes(good[:-500])
        assert deliverer.deliver() == 2
        rows = {r.result_fk: r for r in deliveries(db, dest)}
        states = sorted(r.state for r in rows.values())
        assert states == [DeliveryState.DELIVERED.value, DeliveryState.PENDING.value], rows
        [pending] = [r for r in rows.values() if r.state == DeliveryState.PENDING.value]
        assert "HTTP 400" in pending.last_error
        orthanc_factory.stop_all()
        seg.write_bytes(good)
        clock.now = as_utc(pending.next_attempt_at)
        assert deliverer.deliver() == 1  # the SEG only
        [pending] = [r for r in deliveries(db, dest) if r.state == DeliveryState.PENDING.value]
        assert "cannot connect" in pending.last_error
        back = orthanc_factory.start(http_port=first.http_port)
        clock.now = as_utc(pending.next_attempt_at)
        assert deliverer.deliver() == 1
        assert {r.state for r in deliveries(db, dest)} == {DeliveryState.DELIVERED.value}
        [only] = back.get("/instances?expand")
        assert only["MainDicomTags"]["SOPInstanceUID"] == sop_uid(seg)
    finally:
        db.dispose()


# -- archives that answer otherwise -------------------------------------------------------------
def test_a_202_with_warnings_is_delivered_with_the_warning_and_failures_are_not(
    tmp_path: Path, archive: Callable[..., Archive]
) -> None:
    paths, _ = results_like(tmp_path / "in", slices=2)
    uids = [sop_uid(p) for p in paths]

    def accepted(seen: Seen) -> Answer:
        got = [str(ds.SOPInstanceUID) for ds in seen.parts]
        return 202, stow_json(
            [(got[0], COERCION), *[(u, None) for u in got[1:-1]]], [(got[-1], 0xA700)]
        )

    outcomes = stow_files(paths, WebPeer(archive(answer=accepted).url), timeout_s=30)
    assert [o.sop_instance_uid for o in outcomes] == uids
    assert outcomes[0].delivered and outcomes[0].status == COERCION
    assert "warning" in outcomes[0].message and "0xB000" in outcomes[0].message
    assert all(o.delivered and "202" in o.message for o in outcomes[1:-1])
    assert not outcomes[-1].delivered and outcomes[-1].status == 0xA700
    assert "out of resources" in outcomes[-1].message


def test_a_bare_400_sends_each_instance_alone_once_and_confirms_the_good_ones(
    tmp_path: Path, archive: Callable[..., Archive]
) -> None:
    paths, _ = results_like(tmp_path / "in", slices=3)
    bad = sop_uid(paths[1])

    def picky(seen: Seen) -> Answer:
        if any(str(ds.SOPInstanceUID) == bad for ds in seen.parts):
            return 400, b""
        return all_stored(seen)

    a = archive(answer=picky)
    outcomes = stow_files(paths, WebPeer(a.url), timeout_s=30)
    assert [o.delivered for o in outcomes] == [u != bad for u in map(sop_uid, paths)]
    assert len(a.seen) == 1 + len(paths)  # the batch, then each unconfirmed one alone


def test_a_failure_after_some_requests_keeps_what_was_delivered(
    tmp_path: Path, archive: Callable[..., Archive]
) -> None:
    paths, _ = results_like(tmp_path / "in", slices=4)
    answers = iter([True])

    def then_busy(seen: Seen) -> Answer:
        return all_stored(seen) if next(answers, False) else (503, b"busy")

    a = archive(answer=then_busy)
    outcomes = stow_files(paths, WebPeer(a.url), timeout_s=30, batch_bytes=paths[0].stat().st_size)
    assert outcomes[0].delivered
    assert not any(o.delivered for o in outcomes[1:])
    assert all("503" in o.message for o in outcomes[1:])
    assert len(a.seen) == 2  # no request after the archive failed
    down = archive(answer=lambda seen: (503, b"<html>down</html>"))
    with pytest.raises(DeliveryError, match="503"):
        stow_files(paths, WebPeer(down.url), timeout_s=30)


def test_an_answer_over_its_bound_fails_the_attempt_instead_of_filling_memory(
    tmp_path: Path, archive: Callable[..., Archive]
) -> None:
    paths, _ = results_like(tmp_path / "in", slices=2)
    huge = archive(answer=lambda seen: (200, b" " * (MAX_ANSWER_BYTES + 1)))
    with pytest.raises(DeliveryError, match="over"):
        stow_files(paths, WebPeer(huge.url), timeout_s=30)
    fits = archive(answer=lambda seen: (200, b" " * MAX_ANSWER_BYTES))
    assert all(o.delivered for o in stow_files(paths, WebPeer(fits.url), timeout_s=30))


def test_a_file_that_shrinks_while_sent_fails_alone_and_the_rest_go_on(
    tmp_path: Path, archive: Callable[..., Archive]
) -> None:
    paths, _ = results_like(tmp_path / "in", slices=3)
    plan = [plan_part(i, p) for i, p in enumerate(paths)]
    first = plan[0]
    assert isinstance(first, StowPart)
    plan[0] = dataclasses.replace(first, size=first.size + 4096)  # as if cut after planning
    a = archive()
    outcomes = stow_plan(plan, WebPeer(a.url), timeout_s=30, batch_bytes=first.size)
    assert not outcomes[0].delivered and "shrank" in outcomes[0].message
    assert all(o.delivered for o in outcomes[1:]), outcomes


def test_batches_are_bounded_per_study_and_a_large_file_goes_alone(
    tmp_path: Path, archive: Callable[..., Archive]
) -> None:
    one, study_one = results_like(tmp_path / "one", seed=1, slices=8)
    two, study_two = results_like(tmp_path / "two", seed=2, slices=3)
    limit = 2 * one[0].stat().st_size + 1
    mixed = [*one[:4], *two, *one[4:]]
    large = {sop_uid(p) for p in mixed if p.stat().st_size > limit}
    assert sop_uid(one[-2]) in large  # the SEG
    a = archive()
    outcomes = stow_files(mixed, WebPeer(a.url), timeout_s=30, batch_bytes=limit)
    assert all(o.delivered for o in outcomes)
    assert [o.sop_instance_uid for o in outcomes] == [sop_uid(p) for p in mixed]
    for seen in a.seen:
        study = {str(ds.StudyInstanceUID) for ds in seen.parts}
        assert seen.path == f"/dicom-web/studies/{study.pop()}" and not study
        uids = {str(ds.SOPInstanceUID) for ds in seen.parts}
        if uids & large:
            assert len(uids) == 1  # a file over the limit goes alone
        else:
            assert 1 <= len(uids) <= 2 and seen.length <= limit + 2 * 100  # + part headers
    per_study = [s.path.rsplit("/", 1)[1] for s in a.seen]
    assert per_study == sorted(per_study, key=[study_one, study_two].index)
    assert len(a.seen) >= (len(mixed) + 1) // 2


# -- credentials and TLS -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("auth", "line", "header"),
    [
        ("bearer", SECRET, f"Bearer {SECRET}"),
        ("basic", f"ai-node:{SECRET}", "Basic YWktbm9kZTpzM2NyM3QtQ2FuYXJ5LTdmMWU="),
    ],
)
def test_credentials_from_a_file_are_sent_and_never_logged_nor_in_errors(
    tmp_path: Path,
    archive: Callable[..., Archive],
    caplog: pytest.LogCaptureFixture,
    auth: str,
    line: str,
    header: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore too
    paths, _ = results_like(tmp_path / "in", slices=2)
    secrets = tmp_path / "secret"
    secrets.write_text(line + "\n")
    a = archive(require=header)
    peer = WebPeer(a.url, auth, str(secrets))
    assert all(o.delivered for o in stow_files(paths, peer, timeout_s=30))
    assert {s.headers["authorization"] for s in a.seen} == {header}
    secrets.write_text(line.replace(SECRET, "wrong-Canary") + "\n")
    with pytest.raises(DeliveryError, match=r"401.*credentials") as refused:
        stow_files(paths, peer, timeout_s=30)
    errors = [refused.value, refused.value.__cause__]
    assert all(SECRET not in repr(e) and "wrong-Canary" not in repr(e) for e in errors)
    assert SECRET not in repr(peer) and SECRET not in str(peer)
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "httpx" in {r.name for r in caplog.records}  # the client's own log was watched
    assert SECRET not in logged and "wrong-Canary" not in logged
    assert header.split()[1] not in logged


def test_a_bad_credentials_file_is_a_configuration_error_that_shows_no_secret(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="credentials_file"):
        WebPeer("https://pacs.example/dicom-web", "bearer")
    with pytest.raises(ConfigError, match="must not hold credentials"):
        WebPeer(f"https://ai:{SECRET}@pacs.example/dicom-web")
    plain = tmp_path / "plain"
    plain.write_text(SECRET)
    with pytest.raises(ConfigError, match="user:password") as bad:
        stow_files([], WebPeer("http://127.0.0.1:9/dicom-web", "basic", str(plain)), timeout_s=1)
    assert SECRET not in str(bad.value)
    with pytest.raises(ConfigError, match="cannot read"):
        stow_files(
            [], WebPeer("http://127.0.0.1:9/x", "bearer", str(tmp_path / "none")), timeout_s=1
        )


def _openssl(*args: str) -> None:
    subprocess.run([require_exe("openssl"), *args], check=True, capture_output=True, timeout=60)


def test_https_needs_the_sites_ca_file(tmp_path: Path, archive: Callable[..., Archive]) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    a = archive(tls=server)
    paths, _ = results_like(tmp_path / "in", slices=2)
    assert all(
        o.delivered for o in stow_files(paths, WebPeer(a.url, ca_file=str(cert)), timeout_s=30)
    )
    with pytest.raises(DeliveryError, match=r"TLS|certificate"):
        stow_files(paths, WebPeer(a.url), timeout_s=30)  # not in the system's store
