"""Test support for STOW-RS ingress: PS3.10 parts, multipart/related bodies, the index and
storage root as a snapshot (to show that nothing was stored), and the response read back.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset

from dicom_ai_node.dicomweb import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_SEQUENCE,
    STOW_CONTENT_TYPE,
)
from dicom_ai_node.store.db import Sessions
from dicom_ai_node.store.tables import Instance

__all__ = [
    "BOUNDARY",
    "failed_of",
    "multipart",
    "part10",
    "post_stow",
    "referenced_of",
    "refusals",
    "snapshot",
]

BOUNDARY = "dicom-ai-node-test-0123456789"


def part10(ds: Dataset) -> bytes:
    """``ds`` as a PS3.10 file (preamble, ``DICM``, file meta, data set)."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def multipart(
    parts: Sequence[bytes], boundary: str = BOUNDARY, part_type: str = "application/dicom"
) -> bytes:
    """A multipart/related body (RFC 2046 5.1.1) of ``parts``, each of ``part_type``."""
    out = bytearray()
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def post_stow(
    url: str,
    token: str,
    body: bytes,
    *,
    study: str | None = None,
    content_type: str | None = None,
    timeout_s: float = 120.0,
) -> httpx.Response:
    """POST a STOW-RS request (``url`` is the node's base URL)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": content_type
        if content_type is not None
        else f"{STOW_CONTENT_TYPE}; boundary={BOUNDARY}",
        "Accept": "application/dicom+json",
    }
    target = f"{url}/dicom-web/studies" + (f"/{study}" if study else "")
    return httpx.post(target, content=body, headers=headers, timeout=timeout_s)


def _items(answer: httpx.Response, tag: str) -> list[dict[str, Any]]:
    body = answer.json()
    items = body.get(tag, {}).get("Value", [])
    assert isinstance(items, list)
    return items


def referenced_of(answer: httpx.Response) -> list[str]:
    """The SOP Instance UIDs of the Referenced SOP Sequence (0008,1199)."""
    return [i["00081155"]["Value"][0] for i in _items(answer, REFERENCED_SOP_SEQUENCE)]


def failed_of(answer: httpx.Response) -> list[tuple[str, int]]:
    """(SOP Instance UID or "", Failure Reason) of the Failed SOP Sequence (0008,1198)."""
    return [
        (i["00081155"].get("Value", [""])[0], i[FAILURE_REASON]["Value"][0])
        for i in _items(answer, FAILED_SOP_SEQUENCE)
    ]


def snapshot(sessions: Sessions, storage: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The indexed instances (SOP Instance UID, sha256) and every file under ``instances/``
    and ``tmp/*.part`` of the storage root."""
    with sessions() as session:
        rows = sorted(
            (str(u), str(h))
            for u, h in session.query(Instance.sop_instance_uid, Instance.sha256).all()
        )
    files = sorted(
        p.relative_to(storage).as_posix()
        for pattern in ("instances/**/*", "tmp/*.part")
        for p in storage.glob(pattern)
        if p.is_file()
    )
    return rows, files


def refusals(audit_text: str) -> list[str]:
    """The descriptions of Use of Restricted Function alerts in a local audit log's text."""
    out = []
    for line in audit_text.splitlines():
        if "Use of Restricted Function" in line:
            for value in re.findall(r'type="Alert Description" value="([^"]*)"', line):
                out.append(base64.b64decode(value).decode("utf-8", "replace"))
    return out
