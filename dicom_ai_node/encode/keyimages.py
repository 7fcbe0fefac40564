"""Encode: which source images are a result's key images, and the picture each carries.

A key image is a source image with the result burned in (IHE AIR's "key images", the
Secondary Capture of :mod:`.sc` and the picture of the PDF report): the source windowed
for display, each label's outline in its recommended colour, the label names with
their measurements, and a caption saying it is an AI result and not for diagnosis.
The pixels come through a :data:`SourcePixels` callable, so no I/O happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset

from ..domain import Measurement, ModelOutput, OutputLabel
from ..errors import EncodeError
from ..picture import (
    Font,
    display_values,
    edge,
    fit_text,
    font,
    measurement_text,
    printable,
    renderable,
    to_float,
)
from .common import EncodeContext
from .seg import check_label_map

__all__ = [
    "CAPTION",
    "KeySlice",
    "SourcePixels",
    "burned_in",
    "caption",
    "key_slices",
    "measurement_line",
]

#: Stored pixel values of source image ``index`` (2-D, or rows x columns x 3 for RGB),
#: as pydicom's ``pixel_array`` gives them; a multi-frame image may give all its frames,
#: of which the first is drawn (the frame the model read).
SourcePixels = Callable[[int], npt.NDArray[np.generic]]

#: The caption's fixed part; the model, version and revision follow. ASCII only: it is
#: also text of the presentation state and the report, and dcmjs 0.52 (OHIF 3.13) reads
#: text in sequence items without the data set's character set (an en dash came garbled).
CAPTION = "NOT FOR DIAGNOSIS - AI RESULT"

Rgb = tuple[int, int, int]
_TEXT: Rgb = (255, 255, 255)
_BOX: Rgb = (0, 0, 0)


@dataclass(frozen=True)
class KeySlice:
    """One key image: a source image and the labels drawn and described on it.

    Attributes
    ----------
    index:
        Index into ``ctx.source`` and the label map's first axis.
    label_values:
        The labels drawn (outline) and described (name, measurements), ascending.
    """

    index: int
    label_values: tuple[int, ...]


def _is_projection(source: Sequence[Dataset]) -> bool:
    return any("FrameOfReferenceUID" not in ds for ds in source)


def key_slices(output: ModelOutput, source: Sequence[Dataset]) -> list[KeySlice]:
    """The key images of a result, in source order.

    * A volume (images sharing a Frame of Reference): for each label with voxels, the
      image where its area is largest (the first of equals); labels whose largest area
      is on the same image share it.
    * A single image, or images without a Frame of Reference (radiographs): each image
      with labelled pixels, with its labels; a single image always, even without a
      label (its labels are then those with measurements or evaluations).
    * No label map: only a single image (it carries the caption and the measurements).

    Parameters
    ----------
    output:
        The model output; its label map is checked against ``source``.
    source:
        The source images, sorted like the label map's first axis.

    Raises
    ------
    EncodeError
        If the label map does not fit the source (see :func:`.seg.check_label_map`).
    """
    if output.label_map is None:
        return [KeySlice(0, _described(output))] if len(source) == 1 else []
    counts = check_label_map(output, source)
    if len(source) == 1 or _is_projection(source):
        out = []
        for k in range(len(source)):
            values = tuple(v for v in sorted(counts) if counts[v][k] > 0)
            if values or len(source) == 1:
                out.append(KeySlice(k, values or _described(output)))
        return out
    best: dict[int, list[int]] = {}
    for value in sorted(counts):
        if counts[value].any():
            best.setdefault(int(np.argmax(counts[value])), []).append(value)
    return [KeySlice(k, tuple(best[k])) for k in sorted(best)]


def _described(output: ModelOutput) -> tuple[int, ...]:
    """Labels with a measurement or evaluation (what a picture without outlines says)."""
    values = {m.label_value for m in output.measurements}
    values |= {e.label_value for e in output.evaluations}
    return tuple(sorted(values))


def caption(ctx: EncodeContext) -> str:
    """``NOT FOR DIAGNOSIS - AI RESULT, <model> <version>`` (plus ``revised n``)."""
    text = f"{CAPTION}, {ctx.algorithm.name} {ctx.algorithm.version}"
    if ctx.revision:
        text += f" {'revised' if ctx.predecessors else 'revision'} {ctx.revision}"
    return text


def _frame(ds: Dataset, raw: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The first frame of ``raw``: (rows, columns) or (rows, columns, 3)."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and raw.ndim == (4 if samples > 1 else 3):
        raw = raw[0]
    return raw


def display_image(ds: Dataset, raw: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """The source image as shown on a display, rows x columns x 3 uint8.

    Greyscale: Modality LUT (Rescale Slope/Intercept, PS3.3 C.11.1), the first VOI window
    (C.11.2), MONOCHROME1 inverted. Colour (pydicom gives RGB): kept, 16-bit scaled to 8.

    Raises
    ------
    EncodeError
        If the pixels are not one image of the size the header says.
    """
    image = _frame(ds, raw)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if image.ndim == 3 and image.shape == (rows, columns, 3):
        if image.dtype == np.uint8:
            return np.ascontiguousarray(image, dtype=np.uint8)
        bits = int(ds.get("BitsStored", 16) or 16)
        scaled = image.astype(np.float64) * 255.0 / float((1 << bits) - 1)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if image.shape != (rows, columns):
        raise EncodeError(f"source pixels have shape {image.shape}, not ({rows}, {columns})")
    slope = to_float(ds.get("RescaleSlope", 1), 1.0) or 1.0
    intercept = to_float(ds.get("RescaleIntercept", 0), 0.0)
    values = image.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    gray = display_values(values, ds)
    return np.repeat(gray[:, :, None], 3, axis=2)


def measurement_line(measurement: Measurement) -> str:
    """``Volume 1234 mL``: concept, value and unit symbol (none for UCUM "1")."""
    return measurement_text(
        measurement.concept.meaning, float(measurement.value), measurement.unit.value
    )


_Line = tuple[Rgb | None, str]


def _lines(output: ModelOutput, labels: Sequence[OutputLabel]) -> list[_Line]:
    lines: list[_Line] = []
    for label in labels:
        lines.append((label.color_rgb, label.name))
        lines += [
            (None, f"  {measurement_line(m)}")
            for m in output.measurements
            if m.label_value == label.value
        ]
        lines += [
            (None, f"  {e.concept.meaning}: {e.value.meaning}")
            for e in output.evaluations
            if e.label_value == label.value
        ]
    return lines


def burned_in(
    ctx: EncodeContext, output: ModelOutput, key: KeySlice, pixels: SourcePixels
) -> npt.NDArray[np.uint8]:
    """The picture a key image carries: the source with the result burned in.

    Parameters
    ----------
    ctx:
        The job's context; ``ctx.source[key.index]`` gives the header (window, rescale).
    output:
        Labels (names, colours), label map (outlines) and measurements.
    key:
        Which image and which labels.
    pixels:
        The stored pixel values of a source image.

    Returns
    -------
    numpy.ndarray
        rows x columns x 3 uint8 (the source's size): the image windowed for display
        (see :func:`display_image`), each label's outline in its colour, a legend of the
        labels with their measurements at the top left and the caption (:func:`caption`)
        at the bottom left, each text on a black box. Only those pixels differ from the
        windowed source.

    Raises
    ------
    EncodeError
        If the index, a label value or the pixels do not fit the source.
    """
    if not 0 <= key.index < len(ctx.source):
        raise EncodeError(f"key image {key.index} is not in the source ({len(ctx.source)})")
    ds = ctx.source[key.index]
    by_value = {label.value: label for label in output.labels}
    unknown = [v for v in key.label_values if v not in by_value]
    if unknown:
        raise EncodeError(f"key image names label values {unknown} that no label describes")
    labels = [by_value[v] for v in key.label_values]
    image = display_image(ds, pixels(key.index))
    rows, columns = image.shape[:2]
    if output.label_map is not None:
        if output.label_map.shape[1:] != (rows, columns):
            raise EncodeError(f"label map shape {output.label_map.shape} does not fit the image")
        thickness = max(1, round(max(rows, columns) / 256))
        plane = output.label_map[key.index]
        for label in labels:
            image[edge(plane == label.value, thickness)] = label.color_rgb
    picture = Image.fromarray(image, "RGB")
    _draw_text(picture, _lines(output, labels), caption(ctx))
    return np.asarray(picture, dtype=np.uint8).copy()


def _draw_text(picture: Image.Image, lines: Sequence[_Line], bottom: str) -> None:
    """The legend at the top left, the caption at the bottom left (wrapped to the width),
    each line on a black box; the legend takes at most the top half."""
    width, height = picture.size
    face = font(max(width, height) // 48)
    line_height = int(face.getbbox("Hg")[3]) + 2
    pad = max(2, line_height // 4)
    draw = ImageDraw.Draw(picture)
    caption_lines = _wrap(draw, renderable(printable(bottom), face), face, width - 2 * pad)
    y = height - pad - line_height * len(caption_lines)
    for text in caption_lines:
        _text_line(draw, (pad, y), None, text, face, line_height, width)
        y += line_height
    room = max(0, (height // 2) // line_height)
    if len(lines) > room:
        more = len(lines) - room + 1
        lines = [*lines[: room - 1], (None, f"... {more} more lines")] if room > 1 else []
    y = pad
    for color, text in lines:
        _text_line(draw, (pad, y), color, printable(text), face, line_height, width)
        y += line_height


def _text_line(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    color: Rgb | None,
    text: str,
    face: Font,
    line_height: int,
    width: int,
) -> None:
    """One line on its black box; a coloured square before it names the outline."""
    x, y = at
    swatch = line_height if color is not None else 0
    shown = fit_text(draw, renderable(text, face), face, width - x - swatch - 2)
    right = x + swatch + int(np.ceil(draw.textlength(shown, font=face))) + 2
    draw.rectangle((x, y, right, y + line_height - 1), fill=_BOX)
    if color is not None:
        draw.rectangle((x + 2, y + 2, x + swatch - 3, y + line_height - 3), fill=color)
    draw.text((x + swatch + 1, y + 1), shown, font=face, fill=_TEXT)


def _wrap(draw: ImageDraw.ImageDraw, text: str, face: Font, width: float) -> list[str]:
    """``text`` in lines no wider than ``width``, broken at spaces where it can be."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if not current or draw.textlength(candidate, font=face) <= width:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines
