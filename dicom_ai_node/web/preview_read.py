"""Web: what the result preview reads: source headers, SEG frames and segments.

Read with pydicom alone (highdicom is the encode stage's), tolerant of what the node
does not write itself: frames are placed on source images by their Derivation Image
Sequence or else their Plane Position (PS3.3 C.7.6.16.2), BINARY, FRACTIONAL and
LABELMAP segmentations are read, and a SEG's missing or odd attributes make a
:class:`PreviewError`, never another exception. The SR is read by :mod:`.preview_sr`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset

from ..errors import NodeError

__all__ = [
    "MAX_SEG_BYTES",
    "MAX_SOURCE_FILES",
    "PreviewError",
    "SegFrame",
    "Segment",
    "SourceImage",
    "as_float",
    "key_masks",
    "lab_to_rgb",
    "model_name",
    "read_file",
    "read_headers",
    "read_seg",
]

#: Most source files one preview reads (their headers; one image's pixels).
MAX_SOURCE_FILES = 2000
#: Largest SEG file a preview reads (all its frames are needed to find the key slice).
MAX_SEG_BYTES = 1 << 30

Rgb = tuple[int, int, int]
Mask = npt.NDArray[np.bool_]

#: What a malformed SEG or SR raises in pydicom and numpy when read as one.
_MALFORMED = (AttributeError, IndexError, KeyError, TypeError, ValueError)


class PreviewError(NodeError):
    """Nothing can be drawn: no image with pixel data, or files that cannot be read."""


def read_file(path: Path, *, pixels: bool) -> Dataset:
    """Read a DICOM file, with (``pixels``) or without its Pixel Data.

    Raises
    ------
    PreviewError
        If it is missing or not DICOM.
    """
    try:
        return dcmread(path, stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many kinds on a broken file
        raise PreviewError(f"cannot read {path.name}: {type(exc).__name__}") from exc


def as_float(value: object, default: float) -> float:
    """``float(value)``, or ``default`` when it is none (a missing or broken DS)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _first(item: Dataset | None, keyword: str) -> Dataset | None:
    sequence = item.get(keyword) if item is not None else None
    return sequence[0] if sequence else None


def _text(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):  # multi-valued
        return "/".join(str(v) for v in value)
    return str(value or "")


def model_name(ds: Dataset) -> str:
    """The model and version that made a result (General Equipment, PS3.3 C.7.5.1)."""
    parts = (_text(ds.get("ManufacturerModelName")), _text(ds.get("SoftwareVersions")))
    return " ".join(p for p in parts if p)


# --- the source images -----------------------------------------------------------------


@dataclass(frozen=True)
class SourceImage:
    """A source image's header: its file and where it lies in the series."""

    path: Path
    sop_instance_uid: str
    #: Sort key: position along the slice normal, Instance Number, SOP Instance UID.
    order: tuple[float, int, str]
    position: tuple[float, ...]


def read_headers(paths: Sequence[Path]) -> list[SourceImage]:
    """The source images' headers in series order (PS3.3 C.7.6.2.1.1); files without
    Rows and Columns (no image) are left out.

    Raises
    ------
    PreviewError
        Over :data:`MAX_SOURCE_FILES` files, an unreadable file, or no image at all.
    """
    if len(paths) > MAX_SOURCE_FILES:
        raise PreviewError(f"{len(paths)} source files; a preview reads at most {MAX_SOURCE_FILES}")
    images = []
    for path in paths:
        ds = read_file(Path(path), pixels=False)
        if "Rows" not in ds or "Columns" not in ds or "SOPInstanceUID" not in ds:
            continue
        position = tuple(as_float(v, 0.0) for v in ds.get("ImagePositionPatient", []))
        iop = [as_float(v, 0.0) for v in ds.get("ImageOrientationPatient", [])]
        along = float("inf")
        if len(position) == 3 and len(iop) == 6:
            along = float(np.dot(np.cross(iop[:3], iop[3:]), position))
        uid = str(ds.SOPInstanceUID)
        order = (along, int(as_float(ds.get("InstanceNumber"), 0)), uid)
        images.append(SourceImage(Path(path), uid, order, position))
    if not images:
        raise PreviewError("no image among the source files")
    return sorted(images, key=lambda i: i.order)


# --- the SEG ---------------------------------------------------------------------------


def lab_to_rgb(value: Sequence[int]) -> Rgb:
    """sRGB of a DICOM CIELab triplet (PS3.3 C.10.7.1.1), D65 as highdicom and dcmjs use."""
    lightness = int(value[0]) * 100.0 / 0xFFFF
    a, b = (int(v) * 255.0 / 0xFFFF - 128.0 for v in value[1:3])
    fy = (lightness + 16.0) / 116.0
    f = np.array([fy + a / 500.0, fy, fy - b / 200.0])
    xyz = np.where(f**3 > 0.008856, f**3, (f - 16.0 / 116.0) / 7.787)
    xyz *= np.array([0.95047, 1.0, 1.08883])
    matrix = np.array(
        [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
    )
    linear = np.clip(matrix @ xyz, 0.0, 1.0)
    srgb = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    red, green, blue = (round(float(c) * 255.0) for c in srgb)
    return red, green, blue


@dataclass(frozen=True)
class Segment:
    """A Segment Sequence item (PS3.3 C.8.20.2); ``color`` is ``None`` without one."""

    number: int
    label: str
    color: Rgb | None
    tracking_uid: str


@dataclass(frozen=True)
class SegFrame:
    """One SEG frame: the source image it lies on, its segment, area and masks."""

    sop_instance_uid: str
    segment: int
    area: int
    masks: Callable[[], dict[int, Mask]]


def _segments(seg: Dataset) -> list[Segment]:
    out = []
    for item in seg.SegmentSequence:
        lab = item.get("RecommendedDisplayCIELabValue")
        color = lab_to_rgb(lab) if lab is not None and len(lab) == 3 else None
        number = int(item.SegmentNumber)
        label = str(item.get("SegmentLabel", "") or f"Segment {number}")
        out.append(Segment(number, label, color, str(item.get("TrackingUID", ""))))
    return sorted(out, key=lambda s: s.number)


def _referenced_uid(item: Dataset) -> str | None:
    source = _first(_first(item, "DerivationImageSequence"), "SourceImageSequence")
    if source is None or "ReferencedSOPInstanceUID" not in source:
        return None
    return str(source.ReferencedSOPInstanceUID)


def _rounded(position: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in position)


def _frame_targets(seg: Dataset, images: Sequence[SourceImage]) -> Iterator[tuple[str | None, int]]:
    """(source SOP Instance UID, segment number) of each frame (PS3.3 C.8.20.3)."""
    shared_segment = _first(
        _first(seg, "SharedFunctionalGroupsSequence"), "SegmentIdentificationSequence"
    )
    by_position = {_rounded(i.position): i.sop_instance_uid for i in images if i.position}
    lone = images[0].sop_instance_uid if len(images) == 1 else None
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        uid = _referenced_uid(item)
        plane = _first(item, "PlanePositionSequence")
        if uid is None and plane is not None and "ImagePositionPatient" in plane:
            uid = by_position.get(_rounded(plane.ImagePositionPatient))
        ident = _first(item, "SegmentIdentificationSequence") or shared_segment
        number = int(ident.ReferencedSegmentNumber) if ident is not None else 0
        yield uid or lone, number


#: Set bits of each byte value.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)


class _SegPixels:
    """A SEG's frames, unpacked one at a time (PS3.5 8.1.1: BINARY frames are bits,
    packed without padding between frames); others through pydicom's decoders."""

    def __init__(self, seg: Dataset) -> None:
        self.rows, self.columns = int(seg.Rows), int(seg.Columns)
        self.count = int(seg.get("NumberOfFrames", 1) or 1)
        self.kind = str(seg.get("SegmentationType", "BINARY"))
        self.maximum = max(1, int(seg.get("MaximumFractionalValue", 255) or 255))
        self.bits = int(seg.BitsAllocated)
        self.stack: npt.NDArray[np.integer] | None = None
        self.raw = np.frombuffer(seg.PixelData, np.uint8)
        pixels = self.count * self.rows * self.columns
        if seg.file_meta.TransferSyntaxUID.is_compressed or self.bits not in (1, 8):
            self.stack = np.asarray(seg.pixel_array).reshape(self.count, self.rows, self.columns)
        elif self.raw.size < (pixels + 7) // 8 * (8 if self.bits == 8 else 1):
            raise ValueError(
                f"Pixel Data holds {self.raw.size} bytes, too few for {self.count} frames"
            )
        self.areas = self._areas()

    def _areas(self) -> npt.NDArray[np.int64]:
        pixels = self.rows * self.columns
        if self.stack is None and self.bits == 1 and pixels % 8 == 0:
            raw = self.raw[: self.count * pixels // 8]
            counts: npt.NDArray[np.int64] = _POPCOUNT[raw].reshape(self.count, -1).sum(1)
            return counts
        return np.array([int(self._frame(k).sum()) for k in range(self.count)], np.int64)

    def _values(self, k: int) -> npt.NDArray[np.integer]:
        pixels = self.rows * self.columns
        if self.stack is not None:
            frame: npt.NDArray[np.integer] = self.stack[k]
        elif self.bits == 8:
            frame = self.raw[k * pixels : (k + 1) * pixels].reshape(self.rows, self.columns)
        else:
            start = k * pixels
            chunk = self.raw[start // 8 : (start + pixels + 7) // 8 + 1]
            bits = np.unpackbits(chunk, bitorder="little")[start % 8 : start % 8 + pixels]
            frame = bits.reshape(self.rows, self.columns)
        return frame

    def _frame(self, k: int) -> Mask:
        values = self._values(k)
        if self.kind == "FRACTIONAL":  # at least half the maximum (PS3.3 C.8.20.2.3)
            return np.asarray(values.astype(np.int64) * 2 >= self.maximum)
        return np.asarray(values != 0)

    def masks(self, k: int, number: int) -> dict[int, Mask]:
        """Segment number -> mask of frame ``k`` (several for a LABELMAP frame)."""
        if self.kind != "LABELMAP":
            return {number: self._frame(k)}
        values = self._values(k)
        return {int(v): np.asarray(values == v) for v in np.unique(values) if v}


def _bind(pixels: _SegPixels, k: int, number: int) -> Callable[[], dict[int, Mask]]:
    return lambda: pixels.masks(k, number)


def read_seg(
    path: Path, images: Sequence[SourceImage]
) -> tuple[list[Segment], list[SegFrame], str]:
    """The SEG's segments, its frames on ``images`` (others left out) and its model.

    Raises
    ------
    PreviewError
        If the file is too large, unreadable or not a Segmentation with frames.
    """
    try:
        if path.stat().st_size > MAX_SEG_BYTES:
            raise PreviewError(f"{path.name} is larger than {MAX_SEG_BYTES >> 20} MiB")
    except OSError as exc:
        raise PreviewError(f"cannot read {path.name}: {type(exc).__name__}") from exc
    seg = read_file(path, pixels=True)
    if "SegmentSequence" not in seg or "PixelData" not in seg:
        raise PreviewError(f"{path.name} is not a Segmentation with pixel data")
    try:
        pixels = _SegPixels(seg)
        known = {i.sop_instance_uid for i in images}
        frames = [
            SegFrame(uid, number, int(pixels.areas[k]), _bind(pixels, k, number))
            for k, (uid, number) in enumerate(_frame_targets(seg, images))
            if k < pixels.count and uid in known
        ]
        return _segments(seg), frames, model_name(seg)
    except (*_MALFORMED, NotImplementedError, RuntimeError) as exc:
        raise PreviewError(f"cannot read the frames of {path.name}: {exc}") from exc


def key_masks(frames: Sequence[SegFrame], uid: str) -> dict[int, Mask]:
    """Segment number -> mask on the image ``uid`` (frames of one segment merged)."""
    out: dict[int, Mask] = {}
    for frame in frames:
        if frame.sop_instance_uid == uid and frame.area:
            for number, mask in frame.masks().items():
                out[number] = out[number] | mask if number in out else mask
    return out
