"""Web: the result preview, a PNG of the key slice with outlines and measurements.

The operator's window shows each result as a picture: the source image where the
segmentation is largest (the radiograph itself for a single image), windowed, with each
segment's outline in its Recommended Display CIELab colour, and a legend band under it
that names the model, the segments and the measurements of the TID 1500 SR. It is drawn
by the server from the stored objects alone (pydicom, numpy and Pillow; highdicom is the
encode stage's), and the same inputs give the same PNG bytes.

Nothing that identifies the patient is drawn: only pixels, outlines, segment labels,
measurement names and values, and the model's name and version.

The work is bounded: at most :data:`MAX_SOURCE_FILES` source files, whose headers are
read without pixel data; only the key image's pixels are read (and the SEG's frames).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset

from ..errors import NodeError
from ..picture import display_values, edge, fit_text, font, printable
from .preview_read import (
    MAX_SOURCE_FILES,
    Mask,
    PreviewError,
    Rgb,
    SegFrame,
    Segment,
    SourceImage,
    as_float,
    key_masks,
    read_file,
    read_headers,
    read_seg,
)
from .preview_sr import Group, Region, read_sr

__all__ = ["MAX_SOURCE_FILES", "Decode", "PreviewError", "render_preview"]

#: Lines of the legend band; more are summed up in a last line.
MAX_LEGEND_LINES = 24

#: Decodes compressed images, as the infer stage's isolated decoder does: datasets ->
#: rescaled pixels of each (first frame, first sample).
Decode = Callable[[Sequence[Dataset]], list[npt.NDArray[np.float32]]]

#: Colours of SR regions and of segments without a recommended colour, in turn.
_PALETTE: tuple[Rgb, ...] = (
    (255, 200, 0), (0, 220, 255), (255, 80, 200), (120, 255, 80), (255, 120, 40),
)  # fmt: skip
_BACKGROUND: Rgb = (0, 0, 0)
_TEXT: Rgb = (235, 235, 235)


def render_preview(
    source_paths: Sequence[Path],
    seg_path: Path | None,
    sr_path: Path | None,
    *,
    size: int = 512,
    decode: Decode | None = None,
) -> bytes:
    """Draw the preview PNG of one result.

    Parameters
    ----------
    source_paths:
        The files of the source series, in any order; files without Rows and Columns
        are skipped.
    seg_path:
        The SEG (PS3.3 A.51): BINARY, FRACTIONAL (outlined at half its maximum) or
        LABELMAP. Its frames are placed on source images by their Derivation Image
        Sequence (else Plane Position); the key image is the one with the largest total
        segment area, and each segment's outline (2 px) is drawn in its recommended
        colour, its label in the legend.
    sr_path:
        A TID 1500 SR (PS3.16): the NUM items and qualitative evaluations of its
        measurement groups go into the legend, under the segment with the same Tracking
        UID. Without a SEG its SCOORD regions are drawn instead, on the image most of
        them reference.
    size:
        The image's long side in pixels (16 to 4096); the legend band goes under it.
    decode:
        Decoder of compressed source images (the node's isolated decoder); ``None``
        decodes them here with pydicom.

    Returns
    -------
    bytes
        The PNG; the same inputs give the same bytes.

    Raises
    ------
    PreviewError
        When there are too many or no source images, a file cannot be read, or the key
        image has no pixel data.
    """
    if not 16 <= size <= 4096:
        raise PreviewError(f"preview size {size} is not in 16..4096")
    images = read_headers(source_paths)
    segments: list[Segment] = []
    frames: list[SegFrame] = []
    groups, model = read_sr(sr_path) if sr_path is not None else ([], "")
    if seg_path is not None:
        segments, frames, seg_model = read_seg(seg_path, images)
        model = seg_model or model
    drawn = groups if seg_path is None else []  # with a SEG, its outlines say it better
    key = _key_image(images, frames, [r for g in drawn for r in g.regions])
    uid = images[key].sop_instance_uid
    picture = _picture(images[key], decode, size)
    colors = {s.number: s.color or _PALETTE[k % len(_PALETTE)] for k, s in enumerate(segments)}
    _draw_outlines(picture, key_masks(frames, uid), colors)
    region_colors = _draw_regions(picture, drawn, uid)
    where = f"image {key + 1} of {len(images)}" if len(images) > 1 else ""
    title = ", ".join(p for p in (model, where) if p)
    lines = _legend(title, segments, colors, groups, region_colors)
    return _png(_compose(picture, lines, size))


# --- the picture ----------------------------------------------------------------------


def _key_image(
    images: Sequence[SourceImage], frames: Sequence[SegFrame], regions: Sequence[Region]
) -> int:
    """The image with the largest segment area, else most SR regions, else the middle."""
    score: dict[str, int] = {}
    for frame in frames:
        score[frame.sop_instance_uid] = score.get(frame.sop_instance_uid, 0) + frame.area
    if not any(score.values()):
        score = {}
        for region in regions:
            score[region.sop_instance_uid] = score.get(region.sop_instance_uid, 0) + 1
    values = [score.get(i.sop_instance_uid, 0) for i in images]
    return int(np.argmax(values)) if any(values) else len(images) // 2


def _pixels(ds: Dataset, decode: Decode | None) -> npt.NDArray[np.float32]:
    """Rescaled pixels of the first frame (PS3.3 C.11.1), as the infer stage reads them."""
    syntax = ds.file_meta.TransferSyntaxUID
    bits, samples = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1))
    rows, columns = int(ds.Rows), int(ds.Columns)
    if not syntax.is_compressed and syntax.is_little_endian and bits in (8, 16) and samples == 1:
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        raw = np.frombuffer(ds.PixelData, dtype, count=rows * columns).reshape(rows, columns)
    elif decode is not None:
        return decode([ds])[0]
    else:
        raw = np.asarray(ds.pixel_array)
        if raw.ndim == 3:  # colour or multi-frame: the first sample / frame
            raw = raw[..., 0] if samples > 1 else raw[0]
    slope = as_float(ds.get("RescaleSlope", 1), 1.0) or 1.0
    intercept = as_float(ds.get("RescaleIntercept", 0), 0.0)
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


@dataclass(frozen=True)
class _Picture:
    """The key image, windowed and scaled, and its size in source pixels."""

    image: Image.Image
    rows: int
    columns: int


def _picture(image: SourceImage, decode: Decode | None, size: int) -> _Picture:
    ds = read_file(image.path, pixels=True)
    if "PixelData" not in ds:
        raise PreviewError(f"{image.path.name} has no pixel data")
    try:
        pixels = _pixels(ds, decode)
    except NodeError as exc:
        raise PreviewError(f"cannot decode {image.path.name}: {exc}") from exc
    except Exception as exc:  # pydicom's decoders raise many kinds on broken data
        raise PreviewError(f"cannot decode {image.path.name}: {type(exc).__name__}") from exc
    if pixels.ndim != 2 or not pixels.size:
        raise PreviewError(f"{image.path.name} has no single-frame grey image")
    rows, columns = pixels.shape
    scale = size / max(rows, columns)
    shape = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    gray = Image.fromarray(display_values(pixels, ds), "L")
    return _Picture(gray.resize(shape, Image.Resampling.BILINEAR).convert("RGB"), rows, columns)


def _nearest(mask: Mask, height: int, width: int) -> Mask:
    """The mask at the picture's size: each picture pixel takes the source pixel under
    its centre."""
    rows = np.minimum(
        ((np.arange(height) + 0.5) * mask.shape[0] / height).astype(int), mask.shape[0] - 1
    )
    columns = np.minimum(
        ((np.arange(width) + 0.5) * mask.shape[1] / width).astype(int), mask.shape[1] - 1
    )
    return mask[np.ix_(rows, columns)]


def _draw_outlines(picture: _Picture, masks: dict[int, Mask], colors: dict[int, Rgb]) -> None:
    """Each segment's outline in its colour, in segment-number order."""
    if not masks:
        return
    pixels = np.array(picture.image)
    height, width = pixels.shape[:2]
    for number in sorted(masks):
        mask = masks[number]
        if mask.shape == (picture.rows, picture.columns):
            color = colors.get(number, _PALETTE[number % len(_PALETTE)])
            pixels[edge(_nearest(mask, height, width))] = color
    picture.image.paste(Image.fromarray(pixels, "RGB"))


def _draw_region(
    draw: ImageDraw.ImageDraw, region: Region, scale: tuple[float, float], color: Rgb, radius: int
) -> None:
    """One SCOORD (PS3.3 C.18.6.1.2); pixel corner (0, 0) is the picture's corner too."""
    points = region.points * np.asarray(scale)
    xy = [(float(x), float(y)) for x, y in points]
    kind = region.graphic_type
    if kind in ("POLYLINE", "POLYGON") and len(xy) > 1:
        draw.line(xy, fill=color, width=2, joint="curve")
    elif kind == "CIRCLE" and len(xy) == 2:
        r = float(np.hypot(*(points[1] - points[0])))
        (x, y) = xy[0]
        draw.ellipse((x - r, y - r, x + r, y + r), outline=color, width=2)
    elif kind == "ELLIPSE" and len(xy) == 4:
        centre = (points[0] + points[1]) / 2
        major, minor = (points[1] - points[0]) / 2, (points[3] - points[2]) / 2
        t = np.linspace(0.0, 2 * np.pi, 65)[:, None]
        ring = centre + np.cos(t) * major + np.sin(t) * minor
        draw.line([(float(x), float(y)) for x, y in ring], fill=color, width=2)
    else:  # POINT, MULTIPOINT and anything unknown: a ring around each point
        for x, y in xy:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=color, width=2)


def _draw_regions(picture: _Picture, groups: Sequence[Group], uid: str) -> dict[int, Rgb]:
    """The SR's regions on the key image; returns each drawn group's colour by index."""
    draw = ImageDraw.Draw(picture.image)
    scale = (picture.image.width / picture.columns, picture.image.height / picture.rows)
    radius = max(3, max(picture.image.size) // 100)
    colors: dict[int, Rgb] = {}
    for k, group in enumerate(groups):
        for region in group.regions:
            if region.sop_instance_uid == uid:
                color = colors.setdefault(k, _PALETTE[len(colors) % len(_PALETTE)])
                _draw_region(draw, region, scale, color, radius)
    return colors


# --- the legend -----------------------------------------------------------------------

_Line = tuple[Rgb | None, str]


def _legend(
    title: str,
    segments: Sequence[Segment],
    colors: dict[int, Rgb],
    groups: Sequence[Group],
    region_colors: dict[int, Rgb],
) -> list[_Line]:
    """Model line, then each segment (its colour) with its group's measurements, then the
    groups no segment has."""
    lines: list[_Line] = [(None, title)] if title else []
    by_uid = {g.tracking_uid: k for k, g in enumerate(groups) if g.tracking_uid}
    shown: set[int] = set()
    for segment in segments:
        lines.append((colors[segment.number], segment.label))
        k = by_uid.get(segment.tracking_uid) if segment.tracking_uid else None
        if k is not None:
            shown.add(k)
            lines += [(None, f"  {text}") for text in groups[k].lines]
    for k, group in enumerate(groups):
        if k not in shown:
            lines.append((region_colors.get(k), group.name))
            lines += [(None, f"  {text}") for text in group.lines]
    if len(lines) > MAX_LEGEND_LINES:
        more = len(lines) - MAX_LEGEND_LINES + 1
        lines = [*lines[: MAX_LEGEND_LINES - 1], (None, f"... {more} more lines")]
    return lines


def _compose(picture: _Picture, lines: Sequence[_Line], size: int) -> Image.Image:
    """The picture on top, the legend band under it."""
    face = font(size // 40)
    bbox = face.getbbox("Hg")
    line_height = int(bbox[3]) + 4
    pad = 8
    width = max(picture.image.width, size // 2)
    band = 2 * pad + line_height * len(lines) if lines else 0
    canvas = Image.new("RGB", (width, picture.image.height + band), _BACKGROUND)
    canvas.paste(picture.image, ((width - picture.image.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.image.height + pad
    x = pad + line_height
    for color, text in lines:
        if color is not None:
            draw.rectangle((pad, y + 2, pad + line_height - 6, y + line_height - 4), fill=color)
        draw.text(
            (x, y), fit_text(draw, printable(text), face, width - x - pad), font=face, fill=_TEXT
        )
        y += line_height
    return canvas


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()
