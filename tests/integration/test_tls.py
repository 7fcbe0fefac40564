"""DICOM over TLS (PS3.15 B.9, BCP 195) over real sockets, both directions.

A test PKI made with ``openssl``: a site CA that signs the node's, the sender's and the
PACS's certificates, and a rogue CA nobody trusts. Peers are pynetdicom with Python's
``ssl`` and dcmtk's ``storescu``/``storescp`` with their TLS options.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.app import Node
from dicom_ai_node.audit.node import audit_paths
from dicom_ai_node.audit.validate import validate
from dicom_ai_node.errors import DeliveryError
from dicom_ai_node.receive.scp import ScpConfig, StorageSCP
from dicom_ai_node.send.net import NodeAE
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store import accounts
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.store.ingest import Ingest
from dicom_ai_node.testing.series import make_ct_series, write_series
from dicom_ai_node.tls import TlsFiles, client_context, server_context

from ..conftest import (
    dcmtk_env,
    free_port,
    require_exe,
    stop_process,
    wait_for_port,
    write_node_config,
)

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class Pki:
    """The test PKI's files."""

    folder: Path
    ca: Path
    rogue_ca: Path

    def identity(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of ``name``."""
        return self.folder / f"{name}.pem", self.folder / f"{name}.key"

    def files(self, name: str, client_certificates: str = "required") -> TlsFiles:
        cert, key = self.identity(name)
        return TlsFiles(cert, key, self.ca, client_certificates)


def _openssl(*args: str) -> None:
    subprocess.run([require_exe("openssl"), *args], check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}"),
        *("-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.pem")),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def _make_leaf(folder: Path, name: str, ca: str) -> None:
    key, csr = folder / f"{name}.key", folder / f"{name}.csr"
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"),
        *("-keyout", str(key), "-out", str(csr)),
    )
    ext = folder / f"{name}.ext"
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        *("x509", "-req", "-in", str(csr), "-days", "2", "-extfile", str(ext)),
        *("-CA", str(folder / f"{ca}.pem"), "-CAkey", str(folder / f"{ca}.key")),
        *("-CAcreateserial", "-out", str(folder / f"{name}.pem")),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _make_ca(folder, "site-ca")
    _make_ca(folder, "rogue-ca")
    for name in ("node", "sender", "pacs"):
        _make_leaf(folder, name, "site-ca")
    _make_leaf(folder, "intruder", "rogue-ca")
    return Pki(folder, folder / "site-ca.pem", folder / "rogue-ca.pem")


@dataclass
class TlsNode:
    """A StorageSCP listening with TLS only, and what it reported."""

    scp: StorageSCP
    db: Database
    failures: list[tuple[str, str]]

    @property
    def port(self) -> int:
        return self.scp.tls_port


@contextlib.contextmanager
def tls_node(tmp_path: Path, pki: Pki, client_certificates: str = "required") -> Iterator[TlsNode]:
    db = Database(f"sqlite:///{tmp_path / 'index.db'}")
    db.migrate()
    failures: list[tuple[str, str]] = []
    config = ScpConfig(
        ae_title="AI_NODE",
        host="127.0.0.1",
        port=0,
        tls=server_context(pki.files("node", client_certificates)),
        tls_port=free_port(),
        plaintext=False,
        on_tls_failure=lambda address, reason: failures.append((address, reason)),
    )
    scp = StorageSCP(
        config, Ingest(FileStore(tmp_path / "storage", fsync=True), db.session, utcnow)
    )
    scp.start()
    try:
        yield TlsNode(scp, db, failures)
    finally:
        scp.stop()
        db.dispose()


def _client(pki: Pki, name: str | None = "sender", ca: Path | None = None) -> ssl.SSLContext:
    """A client context trusting the site CA, presenting ``name``'s certificate (if any)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=ca or pki.ca)
    if name is not None:
        context.load_cert_chain(*pki.identity(name))
    return context


def _echo(port: int, context: ssl.SSLContext | None) -> bool:
    """Whether a C-ECHO over a new association (TLS when ``context``) succeeds."""
    ae = NodeAE(ae_title="SENDER")  # closes sockets pynetdicom 3.0.4 leaves open
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    try:
        tls_args = (context, "localhost") if context is not None else None
        assoc = ae.associate("127.0.0.1", port, ae_title="AI_NODE", tls_args=tls_args)
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status and status.Status == 0)
    finally:
        ae.shutdown()


def _handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A raw TLS connection to the node (the caller closes it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return context.wrap_socket(sock, server_hostname="localhost")
    except BaseException:
        sock.close()
        raise


def _refused(node: TlsNode, context: ssl.SSLContext) -> str:
    """Connect with ``context``, expect the handshake refused; the node's recorded reason."""
    before = len(node.failures)
    with pytest.raises((ssl.SSLError, ConnectionError)), _handshake(node.port, context) as tls:
        tls.sendall(b"\x07\x00")  # TLS 1.3 servers check the client certificate late
        tls.recv(1)
    for _ in range(50):  # the server's thread records it after closing
        if len(node.failures) > before:
            break
        time.sleep(0.05)
    assert len(node.failures) > before, "the node recorded no failed handshake"
    return node.failures[-1][1]


@pytest.fixture
def series(tmp_path: Path) -> list[Dataset]:
    _, datasets = make_ct_series(3, 32, 32, seed=5)
    return datasets


# -- the SCP ---------------------------------------------------------------------------------
def test_a_pynetdicom_sender_with_a_trusted_certificate_echoes_and_stores(
    tmp_path: Path, pki: Pki, series: list[Dataset]
) -> None:
    with tls_node(tmp_path, pki) as node:
        assert _echo(node.port, _client(pki))
        peer = Peer("AI_NODE", "localhost", node.port)
        outcomes = send_datasets(series, peer, calling_ae_title="SENDER", tls=_client(pki))
        assert [o.status for o in outcomes] == [0, 0, 0]
        stored = list((tmp_path / "storage").rglob("*.dcm"))
        assert len(stored) == 3
        assert node.failures == []


def test_bcp195_versions_and_cipher_suites_are_negotiated(tmp_path: Path, pki: Pki) -> None:
    with tls_node(tmp_path, pki) as node:
        tls13 = _client(pki)
        with _handshake(node.port, tls13) as conn:
            assert conn.version() == "TLSv1.3"
        tls12 = _client(pki)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with _handshake(node.port, tls12) as conn:
            negotiated = conn.cipher()
            assert negotiated is not None
            cipher, version, _ = negotiated
            assert version == "TLSv1.2"
            assert cipher.startswith(("ECDHE-", "DHE-")) and "GCM" in cipher, cipher


def test_tls_below_1_2_is_refused(tmp_path: Path, pki: Pki) -> None:
    old = _client(pki)
    with warnings.catch_warnings():  # deprecated: the point is to offer it anyway
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    with tls_node(tmp_path, pki) as node:
        reason = _refused(node, old)
        assert "VERSION" in reason or "PROTOCOL" in reason, reason
        assert _echo(node.port, _client(pki))


def test_a_tls_1_2_suite_outside_bcp195_is_refused(tmp_path: Path, pki: Pki) -> None:
    cbc = _client(pki)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("AES128-SHA:AES256-SHA256")  # RSA key exchange, CBC: not in BCP 195
    with tls_node(tmp_path, pki) as node:
        reason = _refused(node, cbc)
        assert "CIPHER" in reason, reason


def test_plaintext_on_the_tls_port_is_refused_and_the_node_serves_on(
    tmp_path: Path, pki: Pki
) -> None:
    with tls_node(tmp_path, pki) as node:
        assert not _echo(node.port, None)
        assert node.failures, "the plaintext attempt was not recorded"
        assert _echo(node.port, _client(pki))


def test_a_certificate_from_an_untrusted_authority_is_refused(tmp_path: Path, pki: Pki) -> None:
    with tls_node(tmp_path, pki) as node:
        reason = _refused(node, _client(pki, "intruder"))
        assert "CERTIFICATE" in reason, reason
        assert not _echo(node.port, _client(pki, "intruder"))


@pytest.mark.parametrize(("mode", "accepted"), [("required", False), ("optional", True)])
def test_a_caller_without_certificate(tmp_path: Path, pki: Pki, mode: str, accepted: bool) -> None:
    with tls_node(tmp_path, pki, client_certificates=mode) as node:
        assert _echo(node.port, _client(pki, None)) is accepted
        assert _echo(node.port, _client(pki))


def test_dcmtk_storescu_over_tls(tmp_path: Path, pki: Pki, series: list[Dataset]) -> None:
    folder = tmp_path / "series"
    write_series(series, folder)
    cert, key = pki.identity("sender")
    storescu = require_exe("storescu")
    with tls_node(tmp_path, pki) as node:
        base = [storescu, "-aet", "SENDER", "-aec", "AI_NODE"]
        tls = ["+tls", str(key), str(cert), "+cf", str(pki.ca)]
        done = subprocess.run(
            [*base, *tls, "+sd", "127.0.0.1", str(node.port), str(folder)],
            env=dcmtk_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(list((tmp_path / "storage").rglob("*.dcm"))) == len(series)
        plain = subprocess.run(
            [*base, "+sd", "127.0.0.1", str(node.port), str(folder)],
            env=dcmtk_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert plain.returncode != 0


# -- the SCU ---------------------------------------------------------------------------------
@contextlib.contextmanager
def storescp_tls(tmp_path: Path, pki: Pki, identity: str) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp over TLS with ``identity``'s certificate, requiring a trusted client."""
    out = tmp_path / "pacs"
    out.mkdir(exist_ok=True)
    cert, key = pki.identity(identity)
    port = free_port()
    proc = subprocess.Popen(
        [
            require_exe("storescp"), "-aet", "PACS", "-od", str(out),
            "+tls", str(key), str(cert), "+cf", str(pki.ca), "-rc", str(port),
        ],
        env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield port, out
    finally:
        stop_process(proc)


def test_results_are_sent_over_tls_to_a_trusted_destination(
    tmp_path: Path, pki: Pki, series: list[Dataset]
) -> None:
    with storescp_tls(tmp_path, pki, "pacs") as (port, out):
        context = client_context(pki.files("node"))
        outcomes = send_datasets(series, Peer("PACS", "127.0.0.1", port), tls=context)
        assert all(o.delivered for o in outcomes)
        assert len(list(out.iterdir())) == len(series)


def test_a_destination_with_an_untrusted_certificate_gets_nothing(
    tmp_path: Path, pki: Pki, series: list[Dataset]
) -> None:
    with storescp_tls(tmp_path, pki, "intruder") as (port, out):
        context = client_context(pki.files("node"))
        with pytest.raises(DeliveryError, match="TLS"):
            send_datasets(series, Peer("PACS", "127.0.0.1", port), tls=context, timeout_s=5)
        assert list(out.iterdir()) == []


# -- the node: settings and audit --------------------------------------------------------------
def test_the_node_listens_with_tls_only_and_audits_a_refused_handshake(
    tmp_path: Path, pki: Pki
) -> None:
    cert, key = pki.identity("node")
    tls_port = free_port()
    extra = "\n".join(
        [
            "[tls]",
            "enabled = true",
            f"port = {tls_port}",
            f'certificate = "{cert}"',
            f'private_key = "{key}"',
            f'ca_file = "{pki.ca}"',
            "plaintext = false",
        ]
    )
    plain_port = free_port()
    config = write_node_config(
        tmp_path, f"sqlite:///{tmp_path / 'n.db'}", plain_port, [("PACS", free_port())], 0.5, extra
    )
    node = Node(load_settings(config))
    node.start()
    try:
        with socket.socket() as probe:  # no plain listener
            assert probe.connect_ex(("127.0.0.1", plain_port)) != 0
        assert _echo(tls_port, _client(pki))
        assert not _echo(tls_port, _client(pki, "intruder"))
        _the_web_service_is_https_with_the_node_certificate(node, pki)
    finally:
        node.stop()
    log_file, _ = audit_paths(node.settings)
    alerts = []
    for line in log_file.read_bytes().splitlines():
        assert validate(line) == [], line[:200]
        root = ET.fromstring(line)
        event = root.find("EventIdentification/EventID")
        if event is not None and event.get("csd-code") == "110113":
            alerts.append(root)
    assert alerts, "no Security Alert for the refused handshake"
    assert b"127.0.0.1" in ET.tostring(alerts[-1])


def _the_web_service_is_https_with_the_node_certificate(node: Node, pki: Pki) -> None:
    """With [tls] on, the operator's window is served over HTTPS with the node's
    certificate, and its session cookie is Secure."""
    accounts.add_user(node.db.session, "alice", "s3cret-enough", "operator", utcnow())
    url, _ = node.start_web()
    assert url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    with httpx.Client(base_url=url, verify=trusting, timeout=10) as client:
        assert client.get("livez").text == "ok\n"
        answer = client.post("ui/login", data={"username": "alice", "password": "s3cret-enough"})
        assert answer.status_code == 303, answer.text
        cookie = answer.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the site CA
        httpx.get(url + "livez", verify=ssl.create_default_context(cafile=str(pki.rogue_ca)))
