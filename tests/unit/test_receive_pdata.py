"""Receive: P-DATA-TF PDVs split without copying, and malformed items refused (PS3.8 9.3.5)."""

from __future__ import annotations

import socket

import pytest
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicom_ai_node.receive.gate import MAX_PDU_READ
from dicom_ai_node.receive.pdu import PData, pdu_limit, split_pdvs
from dicom_ai_node.receive.transport import RECV_STEP, PduSocket


def encoded_body(pdvs: list[tuple[int, bytes]]) -> bytes:
    """The body (after the 6-byte header) of a P-DATA-TF PDU encoded by pynetdicom."""
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[cid, data] for cid, data in pdvs]  # type: ignore[misc]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return pdu.encode()[6:]


def test_pdvs_match_pynetdicom_and_are_views_of_the_buffer() -> None:
    pdvs = [(1, b"\x03" + b"command"), (3, b"\x00" + bytes(range(256)) * 40), (5, b"\x02")]
    body = bytearray(encoded_body(pdvs))
    got = split_pdvs(memoryview(body))
    assert [(cid, bytes(data)) for cid, data in got] == pdvs
    assert all(isinstance(data, memoryview) and data.obj is body for _, data in got)
    reference = P_DATA_TF()
    reference.decode(b"\x04\x00" + len(body).to_bytes(4, "big") + bytes(body))
    assert [(c, bytes(d)) for c, d in got] == [
        (c, bytes(d)) for c, d in reference.to_primitive().presentation_data_value_list
    ]


def test_the_primitive_carries_the_views() -> None:
    body = bytearray(encoded_body([(7, b"\x02data")]))
    primitive = PData(split_pdvs(memoryview(body))).to_primitive()
    [(cid, data)] = primitive.presentation_data_value_list
    assert cid == 7 and data[0] == 2 and bytes(data[1:]) == b"data"


@pytest.mark.parametrize(
    "body",
    [
        (100).to_bytes(4, "big") + b"\x01\x02abc",  # item longer than the PDU
        (1).to_bytes(4, "big") + b"\x01",  # no room for a message control header
        (2).to_bytes(4, "big") + b"\x01\x02" + b"\x00\x00",  # a truncated second item
    ],
)
def test_malformed_items_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        split_pdvs(memoryview(body))


def test_pdu_limits() -> None:
    assert pdu_limit(0x04, 16384) == 16384  # P-DATA-TF: the Maximum Length Received
    assert pdu_limit(0x04, 0) == MAX_PDU_READ  # unlimited: still bounded
    assert pdu_limit(0x01, 16384) == MAX_PDU_READ  # A-ASSOCIATE-RQ


def test_the_receive_buffer_grows_only_as_bytes_arrive() -> None:
    left, right = socket.socketpair()
    try:
        wrapped = PduSocket.__new__(PduSocket)  # no association needed for recv
        wrapped.socket = left
        wrapped.pending = bytearray(b"RQ")  # read by the gate before the association
        right.sendall(b"x" * 10)
        right.close()
        got = wrapped.recv(3 * RECV_STEP)  # claims 3 MiB, 10 bytes come, then the end
        assert got == bytearray(b"RQ" + b"x" * 10)  # the gate's bytes first
    finally:
        left.close()
