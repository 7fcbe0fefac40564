"""Core: the node's identity in the objects it makes, and knowing those objects when they return.

Every result object names the model that made it in its General Equipment module (PS3.3
C.7.5.1): Manufacturer is :data:`MANUFACTURER`, Manufacturer's Model Name the model's
name, Software Versions its version, and Device UID a UID derived from those two under
:data:`UID_ROOT`. A PACS auto-forward rule may send such objects back to the node (a
naive rule forwards the whole study, results included); :func:`made_by_node` recognises
them by that identity, which no other equipment can carry by accident, so routing never
treats the node's own output as input, whatever its SOP Class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydicom.uid import generate_uid

__all__ = ["MANUFACTURER", "UID_ROOT", "device_uid", "hashed_uid", "made_by_node"]

#: Root of every UID this node creates (and the series builders of ``dicom_ai_node.testing``).
UID_ROOT = "1.2.826.0.1.3680043.10.1453."

#: Manufacturer (0008,0070) of every object the node makes.
MANUFACTURER = "dicom-ai-node"


def hashed_uid(*parts: str) -> str:
    """A UID under :data:`UID_ROOT` that is a hash of ``parts`` (PS3.5 9.1 and B.2).

    pydicom concatenates entropy sources without a separator, so ("ab", "c") and
    ("a", "bc") would collide; one JSON array of the parts is unambiguous.
    """
    return str(generate_uid(UID_ROOT, [json.dumps(list(parts), ensure_ascii=False)]))


def device_uid(name: str, version: str) -> str:
    """Return the Device UID (0018,1002) of one model version (PS3.3 C.7.5.1).

    Parameters
    ----------
    name, version:
        The model's name and version from its manifest.

    Returns
    -------
    str
        The same UID for the same name and version, a different one otherwise.

    Raises
    ------
    ValueError
        If ``name`` or ``version`` is empty.
    """
    if not name or not version:
        raise ValueError("device_uid needs a model name and version")
    return hashed_uid("device", name, version)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip() if value is not None else ""


def made_by_node(header: Mapping[str, Any]) -> str | None:
    """The model that made an object, when its header carries the node's identity.

    The identity is the General Equipment module (PS3.3 C.7.5.1) the encoders write:
    Manufacturer is :data:`MANUFACTURER` and Device UID is :func:`device_uid` of the
    Manufacturer's Model Name and Software Versions. Both must hold, so another vendor's
    object, or one whose equipment a PACS rewrote, is never mistaken for the node's.

    Parameters
    ----------
    header:
        Top-level attributes of one instance, keyword -> value (as
        :func:`dicom_ai_node.route.header.header_of` gives them).

    Returns
    -------
    str | None
        ``"<model> <version>"``, or ``None`` for anything the node did not make.
    """
    if _text(header.get("Manufacturer")) != MANUFACTURER:
        return None
    name = _text(header.get("ManufacturerModelName"))
    version = _text(header.get("SoftwareVersions"))
    if not name or not version:
        return None
    if _text(header.get("DeviceUID")) != device_uid(name, version):
        return None
    return f"{name} {version}"
