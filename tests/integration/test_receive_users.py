"""Receive: User Identity Negotiation (PS3.7 D.3.3.7) at the gate, over real sockets."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from dicom_ai_node.passwords import hash_password
from dicom_ai_node.receive.gate import Limits
from dicom_ai_node.receive.scp import StorageSCP
from dicom_ai_node.receive.users import UserCheck
from dicom_ai_node.store.files import FileStore
from dicom_ai_node.testing.series import make_ct_series, write_series

from ..conftest import dcmtk_env, require_exe, serving

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"
USERS = {"modality1": hash_password("correct horse")}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[StorageSCP, list[tuple[str, str, str]]]]:
    """A listener requiring a user identity; yields it and the refusals it reported."""
    refused: list[tuple[str, str, str]] = []
    check = UserCheck("required", USERS, lambda *args: refused.append(args))
    files = FileStore(tmp_path / "storage", fsync=False)
    with serving(files, f"sqlite:///{tmp_path / 'n.db'}", Limits(users=check)) as (server, _):
        yield server, refused


def _associate(port: int, identity: tuple[int, bytes, bytes] | None) -> tuple[bool, list[Any]]:
    """Whether a C-ECHO association is accepted; and the PDUs received."""
    received: list[Any] = []
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(VERIFICATION)
    ext: list[Any] = []
    if identity is not None:
        item = UserIdentityNegotiation()
        item.user_identity_type, item.primary_field = identity[0], identity[1]
        if identity[0] == 2:
            item.secondary_field = identity[2]
        ext.append(item)
    handlers: list[Any] = [(evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))]
    try:
        assoc = ae.associate(
            "127.0.0.1", port, ae_title="AI_NODE", ext_neg=ext, evt_handlers=handlers
        )
        accepted = assoc.is_established
        if accepted:
            status = assoc.send_c_echo()
            assert status.Status == 0
            assoc.release()
        return accepted, received
    finally:
        ae.shutdown()


def test_the_right_passcode_is_accepted(node: tuple[StorageSCP, list[Any]]) -> None:
    server, refused = node
    accepted, _ = _associate(server.port, (2, b"modality1", b"correct horse"))
    assert accepted and refused == []


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ((2, b"modality1", b"wrong"), "wrong passcode"),
        ((2, b"intruder", b"correct horse"), "unknown user"),
        (None, "no user identity sent"),
    ],
)
def test_a_wrong_or_missing_identity_is_rejected_and_reported(
    node: tuple[StorageSCP, list[Any]], identity: tuple[int, bytes, bytes] | None, reason: str
) -> None:
    server, refused = node
    accepted, received = _associate(server.port, identity)
    assert not accepted
    # PS3.8 9.3.4: rejected-permanent, service-user, no-reason-given
    assert (received[0].result, received[0].source, received[0].reason_diagnostic) == (1, 1, 1)
    assert refused and refused[-1][1:] == ("127.0.0.1", reason)
    assert _associate(server.port, (2, b"modality1", b"correct horse"))[0]


def test_dcmtk_storescu_with_user_and_password(
    node: tuple[StorageSCP, list[Any]], tmp_path: Path
) -> None:
    server, _ = node
    _, datasets = make_ct_series(2, 32, 32, seed=3)
    folder = tmp_path / "series"
    write_series(datasets, folder)
    base = [require_exe("storescu"), "-aet", "TESTSCU", "-aec", "AI_NODE", "+sd"]

    def storescu(*identity: str) -> int:
        args = [*base, *identity, "127.0.0.1", str(server.port), str(folder)]
        done = subprocess.run(args, env=dcmtk_env(), capture_output=True, timeout=60, check=False)
        return done.returncode

    assert storescu("--user", "modality1", "--password", "correct horse") == 0
    assert len(list((tmp_path / "storage").rglob("*.dcm"))) == 2
    assert storescu("--user", "modality1", "--password", "guess") != 0
    assert storescu() != 0
