"""User Identity Negotiation checks (PS3.7 D.3.3.7) on request bytes, without sockets."""

from __future__ import annotations

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import build_context

from dicom_ai_node.passwords import check_hash, hash_password, verify_password
from dicom_ai_node.receive import users
from dicom_ai_node.receive.users import UserCheck, user_identity


def _request(identity_type: int | None, primary: bytes = b"", secondary: bytes = b"") -> bytes:
    """An encoded A-ASSOCIATE-RQ PDU as pynetdicom's SCU would send it."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "SENDER"
    primitive.called_ae_title = "AI_NODE"
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    items: list[object] = [max_length]
    if identity_type is not None:
        item = UserIdentityNegotiation()
        item.user_identity_type = identity_type
        item.primary_field = primary
        if identity_type == 2:
            item.secondary_field = secondary
        item.positive_response_requested = False
        items.append(item)
    primitive.user_information = items  # type: ignore[assignment]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


HASH = hash_password("correct horse", salt=b"0123456789abcdef")


def test_a_hash_verifies_only_its_passcode() -> None:
    check_hash(HASH)
    assert HASH.startswith("scrypt$16384$8$1$")
    assert verify_password(b"correct horse", HASH)
    assert not verify_password(b"correct hors", HASH)
    assert hash_password("x") != hash_password("x")  # salted


@pytest.mark.parametrize(
    "bad", ["", "md5$abc", "scrypt$1024$8$1$MDEyMzQ1Njc4OWFiY2RlZg==$AAAA", "scrypt$x$8$1$a$b"]
)
def test_weak_or_malformed_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_hash(bad)


def test_the_identity_is_read_from_the_request() -> None:
    identity = user_identity(_request(2, b"modality1", b"correct horse"))
    assert identity is not None
    assert (identity.identity_type, identity.username) == (2, "modality1")
    assert identity.secondary_field == b"correct horse"
    assert user_identity(_request(None)) is None


def test_a_sub_item_running_past_its_item_is_an_error() -> None:
    request = bytearray(_request(1, b"modality1"))
    at = request.index(b"modality1") - 2  # the primary field's length
    request[at : at + 2] = (500).to_bytes(2, "big")
    with pytest.raises(ValueError):
        user_identity(bytes(request))


def _check(mode: str) -> tuple[UserCheck, list[tuple[str, str, str]]]:
    refused: list[tuple[str, str, str]] = []
    users = {"modality1": HASH, "viewer": ""}
    return UserCheck(mode, users, lambda *args: refused.append(args)), refused


@pytest.mark.parametrize(
    ("mode", "request_args", "reason"),
    [
        ("required", (2, b"modality1", b"correct horse"), None),
        ("required", (2, b"modality1", b"wrong"), "wrong passcode"),
        ("required", (2, b"nobody", b"correct horse"), "unknown user"),
        ("required", (1, b"modality1"), "wrong passcode"),  # a passcode is configured
        ("required", (1, b"viewer"), None),
        ("required", (3, b"kerberos-ticket"), "identity type 3"),
        ("required", (None,), "no user identity sent"),
        ("optional", (None,), None),
        ("optional", (2, b"modality1", b"wrong"), "wrong passcode"),
        ("off", (2, b"modality1", b"wrong"), None),
    ],
)
def test_modes(mode: str, request_args: tuple[object, ...], reason: str | None) -> None:
    check, refused = _check(mode)
    assert check.refusal(_request(*request_args), "10.0.0.9") == reason  # type: ignore[arg-type]
    if reason is None:
        assert refused == []
    else:
        assert refused[-1][1:] == ("10.0.0.9", reason)


def test_a_passcode_that_matched_is_not_hashed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting(password: bytes, encoded: str) -> bool:
        calls.append(password)
        return verify_password(password, encoded)

    monkeypatch.setattr(users, "verify_password", counting)
    check, _ = _check("required")
    good = _request(2, b"modality1", b"correct horse")
    for _ in range(5):
        assert check.refusal(good, "a") is None
    assert calls == [b"correct horse"]
    assert check.refusal(_request(2, b"modality1", b"wrong"), "a") == "wrong passcode"
    assert calls == [b"correct horse", b"wrong"]
