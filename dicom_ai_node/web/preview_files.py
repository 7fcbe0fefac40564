"""Web: the preview of a stored result, from the files the index names for it.

The picture is drawn from the stored objects (the SEG or SR and its source series) and
kept in a small in-memory cache by result, since a stored result never changes. At most
:data:`MAX_DRAWING` previews are drawn at once; more answer 503, so pictures never take
every worker thread of the service.

A viewer may not see patient data, and a source image may carry it in its pixels (a
name burned into a radiograph or an ultrasound frame). So a viewer gets a preview only
when the source says Burned In Annotation NO, or says nothing and is of a modality whose
images are reconstructed rather than captured (CT, MR, PT, NM; PS3.3 C.7.6.1.1.7).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import HTTPException
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from ..store import timeline
from .context import WebContext
from .preview import PreviewError, render_preview

__all__ = ["MAX_DRAWING", "preview_png", "viewer_may_see"]

#: Previews kept in memory (about 100 KiB each).
CACHE_SIZE = 64
#: Previews drawn at the same time.
MAX_DRAWING = 2
#: Modalities whose images are reconstructed, so carry no burned-in text unless they say so.
RECONSTRUCTED = frozenset({"CT", "MR", "PT", "NM"})

_cache: OrderedDict[tuple[int, int], tuple[bytes, bool]] = OrderedDict()
_lock = threading.Lock()
_drawing = threading.BoundedSemaphore(MAX_DRAWING)


def viewer_may_see(source: Path) -> bool:
    """Whether a viewer may see a picture of ``source``'s pixels (no burned-in text)."""
    try:
        ds = dcmread(
            source, stop_before_pixels=True, specific_tags=["BurnedInAnnotation", "Modality"]
        )
    except (OSError, InvalidDicomError):
        return False
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if burned:
        return burned == "NO"
    return str(ds.get("Modality", "")).strip().upper() in RECONSTRUCTED


def _draw(ctx: WebContext, result_pk: int) -> tuple[bytes, bool]:
    files = timeline.result_files(ctx.sessions, result_pk)
    if files is None or ctx.storage_root is None:
        raise HTTPException(404, "no such result")
    root = ctx.storage_root
    sources = [root / p for p in files.source_paths]
    result = root / files.path
    seg = result if files.kind == "SEG" else (root / files.seg_path if files.seg_path else None)
    sr = result if files.kind == "SR" else (root / files.sr_path if files.sr_path else None)
    if not _drawing.acquire(blocking=False):
        raise HTTPException(503, "previews are being drawn; try again", {"Retry-After": "1"})
    try:
        png = render_preview(sources, seg, sr)
    except PreviewError as exc:
        raise HTTPException(422, f"no preview: {exc}") from exc
    finally:
        _drawing.release()
    return png, bool(sources) and all(viewer_may_see(p) for p in sources[:1])


def preview_png(ctx: WebContext, result_pk: int, *, viewer: bool = False) -> bytes:
    """The PNG preview of result ``result_pk``.

    Raises
    ------
    HTTPException
        404 when there is no such result, 403 for a viewer when the source may carry
        burned-in patient data, 422 when nothing of it can be drawn, 503 when
        :data:`MAX_DRAWING` previews are being drawn.
    """
    key = (id(ctx), result_pk)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
    if found is None:
        found = _draw(ctx, result_pk)
        with _lock:
            _cache[key] = found
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    png, for_viewers = found
    if viewer and not for_viewers:
        raise HTTPException(
            403, "not shown to viewers: the source may carry burned-in patient data"
        )
    return png
