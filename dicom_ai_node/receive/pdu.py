"""Receive: the PDUs as the DUL reads them: length bounds, P-DATA-TF items, A-ABORT values.

The upper layer PDUs of PS3.8 9.3: which types exist, how long each may be, the
presentation data value items of a P-DATA-TF PDU as views of its buffer (pynetdicom
copies each fragment three times before the DIMSE layer copies it again) and the
values an A-ABORT may carry.
"""

from __future__ import annotations

from typing import Any, cast

from pynetdicom.pdu_primitives import P_DATA

from .gate import MAX_PDU_READ

__all__ = [
    "A_ABORT_TYPE",
    "PDU_NAMES",
    "PROVIDER_REASONS",
    "P_DATA_TF_TYPE",
    "PData",
    "PduTooLong",
    "check_abort",
    "pdu_limit",
    "split_pdvs",
]

#: PDU type of P-DATA-TF (PS3.8 9.3.5).
P_DATA_TF_TYPE = 0x04

#: The PDU types of the upper layer protocol (PS3.8 9.3.1) and their names.
PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}


class PduTooLong(ValueError):
    """A PDU longer than the node reads (PS3.8 D.1): the association is aborted."""


def pdu_limit(pdu_type: int, max_pdu: int) -> int:
    """The longest PDU (length field, PS3.8 9.3) the node reads of a type.

    A P-DATA-TF PDU may not exceed the Maximum Length Received the node proposed
    (``max_pdu``; PS3.8 D.1); any other PDU, or P-DATA-TF when ``max_pdu`` is 0
    (unlimited), is bounded by :data:`MAX_PDU_READ`.
    """
    if pdu_type == P_DATA_TF_TYPE and max_pdu:
        return max_pdu
    return MAX_PDU_READ


class PData:
    """A received P-DATA-TF PDU as the state machine's DT-2 action uses it.

    Its PDVs are ``[presentation context ID, message control header + fragment]``,
    each a memoryview of the PDU's buffer (PS3.8 9.3.5.1, E.2).
    """

    __slots__ = ("pdvs",)

    def __init__(self, pdvs: list[list[Any]]) -> None:
        self.pdvs = pdvs

    def to_primitive(self) -> P_DATA:
        """The P-DATA indication for the DIMSE layer."""
        primitive = P_DATA()
        # the property setter accepts only bytes; the DIMSE layer reads these as bytes
        primitive._presentation_data_value_list = cast(list[tuple[int, bytes]], self.pdvs)
        return primitive


def split_pdvs(body: memoryview) -> list[list[Any]]:
    """The PDV items of a P-DATA-TF PDU body (after its 6-byte header), without copying.

    Raises
    ------
    ValueError
        When an item's length runs past the PDU or is too short to hold a presentation
        context ID and a message control header (PS3.8 9.3.5.1).
    """
    pdvs: list[list[Any]] = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise ValueError("truncated PDV item")
        item_length = int.from_bytes(body[offset : offset + 4], "big")
        if item_length < 2 or offset + 4 + item_length > end:
            raise ValueError(f"PDV item length {item_length} does not fit the PDU")
        pdvs.append([body[offset + 4], body[offset + 5 : offset + 4 + item_length]])
        offset += 4 + item_length
    return pdvs


#: PDU type of A-ABORT (PS3.8 9.3.8).
A_ABORT_TYPE = 0x07

#: The reasons an A-ABORT from the service provider (source 2) may give (PS3.8 9.3.8).
PROVIDER_REASONS = (0, 1, 2, 4, 5, 6)


def check_abort(body: bytes | bytearray) -> None:
    """Check the source and reason of an A-ABORT PDU's body (PS3.8 9.3.8, Table 9-26).

    Raises
    ------
    ValueError
        For a source other than 0, 1 or 2, or a reason a provider cannot give.
    """
    if len(body) < 4:
        return  # pynetdicom's decoder says what is missing
    source, reason = body[2], body[3]
    if source not in (0, 1, 2) or (source == 2 and reason not in PROVIDER_REASONS):
        raise ValueError(f"A-ABORT with source {source} and reason {reason} (PS3.8 9.3.8)")
