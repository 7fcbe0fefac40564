"""Receive: the directly encoded file head and C-STORE response equal pynetdicom's bytes."""

from __future__ import annotations

import pytest
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from dicom_ai_node.receive.part10 import file_head
from dicom_ai_node.receive.response import encode_store_response

CT = "1.2.840.10008.5.1.4.1.1.2"
UIDS = ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.10.1453." + "9" * 36]


@pytest.mark.parametrize("sop_uid", UIDS)
@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"]
)
def test_file_head_is_pynetdicoms(sop_uid: str, syntax: str) -> None:
    meta = create_file_meta(
        sop_class_uid=UID(CT), sop_instance_uid=UID(sop_uid), transfer_syntax=UID(syntax)
    )
    assert file_head(CT, sop_uid, syntax) == b"\x00" * 128 + b"DICM" + encode_file_meta(meta)


def _response(status: int, sop_uid: str | None, sop_class: str | None = CT) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 65535
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    return rsp


def _pynetdicom_bytes(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 0))
    [(_, data)] = pdata.presentation_data_value_list
    return bytes(data[1:])  # without the message control header


@pytest.mark.parametrize("status", [0x0000, 0x0111, 0xA700, 0xA900, 0xC000, 0xB000])
@pytest.mark.parametrize("sop_uid", [*UIDS, None])
def test_store_response_is_pynetdicoms(status: int, sop_uid: str | None) -> None:
    rsp = _response(status, sop_uid)
    assert encode_store_response(rsp) == _pynetdicom_bytes(rsp)
    rsp = _response(status, sop_uid, sop_class=None)
    assert encode_store_response(rsp) == _pynetdicom_bytes(rsp)


def test_other_messages_are_left_to_pynetdicom() -> None:
    with_comment = _response(0xC000, "1.2.3")
    with_comment.ErrorComment = "cannot parse"
    request = C_STORE()
    request.MessageID = 1
    assert encode_store_response(with_comment) is None
    assert encode_store_response(request) is None
    assert encode_store_response(C_ECHO()) is None
