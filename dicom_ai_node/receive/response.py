"""Receive: the C-STORE response command set, encoded directly (PS3.7 9.3.1.2 and E.1).

pynetdicom turns each response primitive into a pydicom dataset, then encodes it (about
0.2 ms per response, a noticeable share of a C-STORE). A C-STORE response with a
status and no error comment or offending element is seven fixed elements; this module
writes the same bytes (command sets are always implicit VR little endian, PS3.7 6.3.1)
and sends them in one P-DATA, as pynetdicom does for a command set that fits one PDU.
Anything else, or a response someone else listens to (EVT_DIMSE_SENT), goes through
pynetdicom's own path.

A received message pynetdicom cannot make a primitive of is logged here in one line
with the reason (pynetdicom logs it twice, the second time with a traceback; CWE-117).
"""

from __future__ import annotations

import logging
import struct
import threading
from io import BytesIO
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_sent_handler
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_STORE, N_EVENT_REPORT
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

__all__ = ["StoreResponseDIMSE", "encode_store_response"]

log = logging.getLogger(__name__)

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def encode_store_response(primitive: object) -> bytes | None:
    """The encoded command set of a plain C-STORE response, or None for anything else.

    None (use pynetdicom's encoding) for requests, other messages, and responses with an
    Error Comment or Offending Element.
    """
    if type(primitive) is not C_STORE:
        return None
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    parts = []
    if primitive.AffectedSOPClassUID is not None:
        parts.append(_element(0x0002, _uid(str(primitive.AffectedSOPClassUID))))
    parts.append(_element(0x0100, struct.pack("<H", _C_STORE_RSP)))
    parts.append(_element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)))
    parts.append(_element(0x0800, struct.pack("<H", _NO_DATA_SET)))
    parts.append(_element(0x0900, struct.pack("<H", primitive.Status)))
    if primitive.AffectedSOPInstanceUID is not None:
        parts.append(_element(0x1000, _uid(str(primitive.AffectedSOPInstanceUID))))
    body = b"".join(parts)
    return _element(0x0000, struct.pack("<I", len(body))) + body


class StoreResponseDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending plain C-STORE responses encoded here."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a DIMSE message; a plain C-STORE response without building a dataset."""
        encoded = encode_store_response(primitive)
        max_pdu = self.maximum_pdu_size
        if (
            encoded is None
            or (max_pdu and len(encoded) > max_pdu - 6)  # needs more than one fragment
            or any(h[0] is not standard_dimse_sent_handler for h in self._sent_handlers())
        ):
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
        self.dul.send_pdu(pdata)

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Add a received P-DATA to its message; queue the message once it is complete.

        pynetdicom 3.0's, except for a message whose values pynetdicom cannot take (a
        Priority outside 0-2, PS3.7 9.3.1.1; a value of the wrong type): logged in one
        line with the reason, then the association ends as in pynetdicom (Evt19, an
        invalid PDU: A-ABORT, PS3.8 9.2).
        """
        if self.message is None:
            self.message = DIMSEMessage()
        if not self.message.decode_msg(primitive, self.assoc):
            return
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": self.message})
        context_id = cast(int, self.message.context_id)
        try:
            received = self.message.message_to_primitive()
        except Exception as exc:  # what pynetdicom's setters raise on a peer's values
            log.error("received an invalid DIMSE message, aborting the association: %s", exc)
            self.dul.event_queue.put("Evt19")
            return
        if isinstance(received, C_CANCEL) and len(self.cancel_req) < 10:
            self.cancel_req[cast(int, received.MessageIDBeingRespondedTo)] = received
        elif isinstance(received, N_EVENT_REPORT) and received.is_valid_request:
            # as pynetdicom: served at once in a thread of its own
            serve = make_target(self.assoc._serve_request)
            threading.Thread(target=serve, args=(received, context_id)).start()
        else:
            self.msg_queue.put((context_id, cast(Any, received)))  # not a C-CANCEL here
        # as pynetdicom (its issue #41): the message keeps no buffers once handed on
        self.message.encoded_command_set = BytesIO()
        self.message.data_set = BytesIO()
        self.message._data_set_file = None
        self.message._data_set_path = None
        self.message = None

    def _sent_handlers(self) -> list[tuple[Any, Any]]:
        """EVT_DIMSE_SENT handlers; pynetdicom's own logs nothing for a C-STORE response."""
        return cast(list[tuple[Any, Any]], self.assoc.get_handlers(evt.EVT_DIMSE_SENT))
