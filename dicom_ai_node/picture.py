"""Core: drawing what a result says onto an image, shared by the web preview and the
encoders' burned-in key images.

Display values of an image (PS3.3 C.11.2.1.2.1 linear VOI window, MONOCHROME1 inverted),
outlines of a mask, the font and text helpers, and how a measurement is written. Pure
functions of arrays and datasets (numpy and Pillow); no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import ImageDraw, ImageFont
from pydicom.dataset import Dataset

__all__ = [
    "UNIT_SYMBOLS",
    "Font",
    "display_values",
    "edge",
    "fit_text",
    "font",
    "measurement_text",
    "number_text",
    "printable",
    "renderable",
    "to_float",
]

#: UCUM codes shown as the symbol a reader expects.
UNIT_SYMBOLS = {"[hnsf'U]": "HU", "ml": "mL"}

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Mask = npt.NDArray[np.bool_]


def to_float(value: object, default: float) -> float:
    """``float(value)``, or ``default`` when it is none (a missing or broken DS)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _first_value(value: object) -> float:
    if isinstance(value, Sequence) and not isinstance(value, str):  # a multi-valued DS
        value = value[0] if len(value) else None
    return to_float(value, float("nan"))


def display_values(pixels: npt.NDArray[np.float32], ds: Dataset) -> npt.NDArray[np.uint8]:
    """8-bit display values of rescaled pixels (after the Modality LUT, PS3.3 C.11.1).

    The image's first VOI window (PS3.3 C.11.2.1.2.1, linear), else its 1st to 99th
    percentile; MONOCHROME1 inverted, so that the result is always MONOCHROME2-like.
    """
    centre, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if np.isfinite(centre) and np.isfinite(width) and width > 1:
        scaled = (pixels - (centre - 0.5)) / (width - 1) + 0.5
    else:
        finite = pixels[np.isfinite(pixels)]
        low, high = (float(v) for v in np.percentile(finite, [1, 99])) if finite.size else (0, 1)
        scaled = (pixels - low) / max(high - low, 1e-6)
    out: npt.NDArray[np.uint8] = np.round(np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(
        np.uint8
    )
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = np.subtract(255, out, dtype=np.uint8)
    return out


def edge(mask: Mask, thickness: int = 2) -> Mask:
    """The mask's pixels within ``thickness`` (4-neighbour steps) of its outside."""
    inner = mask
    for _ in range(thickness):
        p = np.pad(inner, 1)
        inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    result: Mask = mask & ~inner
    return result


def font(size: int) -> Font:
    """Pillow's default font at ``size`` pixels (at least 10), or its fixed bitmap font
    when Pillow has no FreeType."""
    try:
        return ImageFont.load_default(max(10, size))
    except ImportError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def printable(text: str, limit: int = 200) -> str:
    """Printable characters only (text may come from files), at most ``limit``."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


#: What a character the font has no glyph for is drawn as.
_STAND_INS = {"\u2013": "-", "\u2014": "-", "\u2010": "-", "\u2011": "-"}
#: A code point no font has: its mask is the font's "missing glyph" box.
_NO_GLYPH = "\U0010ffff"


def _mask(face: Font, char: str) -> tuple[bytes, tuple[int, int]]:
    image = face.getmask(char)
    return bytes(image), image.size


def renderable(text: str, face: Font) -> str:
    """``text`` with each character ``face`` cannot draw replaced: dashes by ``-``, the
    rest by ``?`` (Pillow's default font has no en dash, for one)."""
    missing = _mask(face, _NO_GLYPH)
    out = {}
    for char in set(text):
        if not char.isascii() and _mask(face, char) == missing:
            out[char] = _STAND_INS.get(char, "?")
    return "".join(out.get(c, c) for c in text)


def fit_text(draw: ImageDraw.ImageDraw, text: str, face: Font, width: float) -> str:
    """``text``, cut with "..." where it would be wider than ``width`` pixels."""
    if draw.textlength(text, font=face) <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        if draw.textlength(text[:end] + "...", font=face) <= width:
            return text[:end] + "..."
    return ""


def measurement_text(meaning: str, value: float, unit: str) -> str:
    """``Volume 1234 mL``: concept, value and unit symbol (none for UCUM "1").

    The one wording of a measurement (PS3.3 C.18.1 NUM: name, value, UCUM unit) on the
    preview, the key images, the presentation state and the PDF report.
    """
    symbol = UNIT_SYMBOLS.get(unit, unit)
    return f"{meaning} {number_text(value)} {symbol if symbol != '1' else ''}".rstrip()


def number_text(value: float) -> str:
    """A measured value with the digits a reader needs (3 significant, none after 100)."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"
