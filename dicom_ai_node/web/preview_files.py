"""Web: the preview of a stored result, from the files the index names for it.

The picture is drawn from the stored objects (the SEG or SR and its source series) and
kept in a small in-memory cache by result, since a stored result never changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from fastapi import HTTPException

from ..store import timeline
from .context import WebContext
from .preview import PreviewError, render_preview

__all__ = ["preview_png"]

#: Previews kept in memory (about 100 KiB each).
CACHE_SIZE = 64
_cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
_lock = threading.Lock()


def preview_png(ctx: WebContext, result_pk: int) -> bytes:
    """The PNG preview of result ``result_pk``.

    Raises
    ------
    HTTPException
        404 when there is no such result, 422 when nothing of it can be drawn.
    """
    key = (id(ctx), result_pk)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    files = timeline.result_files(ctx.sessions, result_pk)
    if files is None or ctx.storage_root is None:
        raise HTTPException(404, "no such result")
    root = ctx.storage_root
    result = root / files.path
    seg = result if files.kind == "SEG" else files.seg_path and root / files.seg_path
    sr = result if files.kind == "SR" else files.sr_path and root / files.sr_path
    try:
        png = render_preview([root / p for p in files.source_paths], seg or None, sr or None)
    except PreviewError as exc:
        raise HTTPException(422, f"no preview: {exc}") from exc
    with _lock:
        _cache[key] = png
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return png
