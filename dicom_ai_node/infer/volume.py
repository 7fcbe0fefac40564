"""Infer: a series' datasets -> one sorted 3-D :class:`Volume`, with input quality checks.

Slices are sorted along the slice normal (PS3.3 C.7.6.2.1.1, ImagePositionPatient and
ImageOrientationPatient). The checks run before any inference: pixel spacing present,
one orientation, one image size, even slice spacing (no missing slices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset

from ..domain import QualityIssue, Volume

__all__ = [
    "Decode",
    "QualityReport",
    "load_volume",
    "needs_codec",
    "pixels_of",
    "read_images",
    "ultrasound_spacing",
]

QualityReport = tuple[QualityIssue, ...]


#: Elements longer than this (Pixel Data) stay in their file until used (:func:`read_images`).
DEFER_BYTES = 64 * 1024


def read_images(paths: Iterable[Path]) -> list[Dataset]:
    """Read a series' files, leaving each Pixel Data in its file until it is used.

    :func:`load_volume` with ``release_pixels`` then reads one image's pixels at a time
    into the volume and drops them, so the series is held once (as the volume), never
    as file bytes as well (1000 slices of 512x512: 0.5 GB less at the peak).
    """
    return [dcmread(path, defer_size=DEFER_BYTES) for path in paths]


#: Decodes images that need a codec (see :mod:`.decode`): datasets -> rescaled pixels.
Decode = Callable[[Sequence[Dataset]], list[npt.NDArray[np.float32]]]


def needs_codec(ds: Dataset) -> bool:
    """Whether the image's pixels need pydicom's decoders (anything but the fast path).

    The fast path is uncompressed little-endian data of 8 or 16 bits, one sample per
    pixel (PS3.5 A.1, A.2), read with ``np.frombuffer`` (3x faster than ``pixel_array``).
    """
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return not (
        ts is not None
        and not ts.is_compressed
        and ts.is_little_endian
        and int(ds.BitsAllocated) in (8, 16)
        and ds.get("SamplesPerPixel", 1) == 1
    )


def pixels_of(ds: Dataset) -> npt.NDArray[np.float32]:
    """Rescaled pixel values of a single-frame image (PS3.3 C.11.1 Modality LUT).

    Uncompressed little-endian data is read with ``np.frombuffer``; everything else goes
    through pydicom's decoders (:func:`needs_codec`).
    """
    bits = int(ds.BitsAllocated)
    if not needs_codec(ds):
        dtype = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16}[
            (bits, int(ds.PixelRepresentation))
        ]
        count = int(ds.Rows) * int(ds.Columns)
        arr = np.frombuffer(ds.PixelData, dtype=dtype, count=count).reshape(ds.Rows, ds.Columns)
    else:
        arr = ds.pixel_array
        if arr.ndim == 3:  # colour or multi-frame: take the first frame / luminance
            arr = arr[..., 0] if arr.shape[-1] in (3, 4) else arr[0]
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _normal(ds: Dataset) -> npt.NDArray[np.float64] | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return np.cross(row, col)


def _orientation_of(ds: Dataset) -> tuple[float, ...] | None:
    """Image Orientation (Patient) as six floats, or ``None`` when absent or malformed."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    return tuple(float(v) for v in iop)


def _sort(datasets: Sequence[Dataset]) -> tuple[list[Dataset], list[QualityIssue]]:
    issues: list[QualityIssue] = []
    normal = _normal(datasets[0])
    if normal is None or any("ImagePositionPatient" not in ds for ds in datasets):
        issues.append(
            QualityIssue("geometry", "ImageOrientationPatient/ImagePositionPatient missing")
        )
        return sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0)), issues
    orientations = {
        tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for ds in datasets
    }
    if len(orientations) > 1:
        issues.append(QualityIssue("orientation", f"{len(orientations)} different orientations"))
    row, col = datasets[0].ImageOrientationPatient[:3], datasets[0].ImageOrientationPatient[3:]
    if abs(normal[2]) > 0.9 and (float(row[0]) < 0 or float(col[1]) < 0):
        # slice models assume the usual axial display: columns to the patient's left,
        # rows to posterior (PS3.3 C.7.6.2.1.1); a flipped image would swap left and right
        issues.append(
            QualityIssue("orientation", "axial images not in the standard in-plane orientation")
        )
    keyed = sorted(
        datasets, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float)))
    )
    return keyed, issues


def _spacing_issues(positions: npt.NDArray[np.float64]) -> tuple[float, list[QualityIssue]]:
    if len(positions) < 2:
        return 1.0, [QualityIssue("slices", "fewer than 2 slices")]
    steps = np.diff(positions)
    spacing = float(np.median(steps))
    issues = []
    if spacing <= 0:
        issues.append(QualityIssue("spacing", "duplicate slice positions"))
        return 1.0, issues
    uneven = np.abs(steps - spacing) > max(0.05 * spacing, 0.01)
    if uneven.any():
        gaps = int(np.count_nonzero(steps > 1.5 * spacing))
        message = (
            f"{gaps} gap(s) in slice positions: missing slices"
            if gaps
            else f"uneven slice spacing ({int(uneven.sum())} steps differ from {spacing:.3g} mm)"
        )
        issues.append(QualityIssue("spacing", message))
    return spacing, issues


#: Default pixel budget of :func:`load_volume` (4 GB as float32).
MAX_VOXELS = 1_000_000_000


def declared_voxels(ds: Dataset) -> int:
    """Pixels an image declares (Rows x Columns x Number of Frames x Samples per Pixel).

    Read from the header (PS3.3 C.7.6.3), before any decoding, so that a decompression
    bomb or an absurd size is refused without allocating for it.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * max(frames, 1) * max(samples, 1)


def _fill(
    ordered: Sequence[Dataset],
    decode: Decode | None,
    out: npt.NDArray[np.float32],
    release_pixels: bool,
) -> bool:
    """Write each image's rescaled pixels into ``out[k]``; False if a decoded size differs.

    Images needing a codec go through ``decode`` (if given) in one batch; the others are
    read here, one at a time, so no second copy of the series is ever held. With
    ``release_pixels`` each dataset's Pixel Data is dropped once copied.
    """
    coded = [i for i, ds in enumerate(ordered) if needs_codec(ds)]
    decoded: dict[int, npt.NDArray[np.float32]] = {}
    if decode is not None and coded:
        for i in coded:  # read what read_images left in the file: the decoder gets bytes
            ordered[i].PixelData  # noqa: B018
        decoded = dict(zip(coded, decode([ordered[i] for i in coded]), strict=True))
    for k, ds in enumerate(ordered):
        pixels = decoded.pop(k) if k in decoded else pixels_of(ds)
        if pixels.shape != out.shape[1:]:
            return False
        out[k] = pixels
        if release_pixels and "PixelData" in ds:
            del ds.PixelData
    return True


#: Physical Units X/Y Direction of a calibrated ultrasound region: cm (PS3.3 C.8.5.5.1.15).
_CM = 3
#: Region Spatial Format of a 2-D tissue image (PS3.3 C.8.5.5.1.1).
_TISSUE = 1


def ultrasound_spacing(ds: Dataset) -> tuple[float, float] | None:
    """Pixel size (row, column) in mm from an ultrasound image's calibrated regions.

    Ultrasound images carry no Pixel Spacing; the scanner calibrates regions of the
    image instead (Sequence of Ultrasound Regions, PS3.3 C.8.5.5). The largest 2-D
    tissue region with both physical units in cm gives the spacing (Physical Delta X
    across the columns, Physical Delta Y down the rows). ``None`` without one.
    """
    best: tuple[int, tuple[float, float]] | None = None
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        try:
            units = (int(region.PhysicalUnitsXDirection), int(region.PhysicalUnitsYDirection))
            delta_x, delta_y = abs(float(region.PhysicalDeltaX)), abs(float(region.PhysicalDeltaY))
            area = (int(region.RegionLocationMaxX1) - int(region.RegionLocationMinX0)) * (
                int(region.RegionLocationMaxY1) - int(region.RegionLocationMinY0)
            )
            spatial = int(region.RegionSpatialFormat)
        except (AttributeError, TypeError, ValueError):
            continue
        if units != (_CM, _CM) or spatial != _TISSUE or min(delta_x, delta_y) <= 0:
            continue
        if best is None or area > best[0]:
            best = (area, (10.0 * delta_y, 10.0 * delta_x))
    return None if best is None else best[1]


def _projection_spacing(ds: Dataset) -> tuple[float, float]:
    """Pixel Spacing, else Imager Pixel Spacing (PS3.3 10.7.1.3), else the ultrasound
    regions' calibration (:func:`ultrasound_spacing`), else 1 mm: a projection
    radiograph's spacing is only nominal and nothing measured from it relies on it."""
    calibrated = ultrasound_spacing(ds)
    if calibrated is not None and "PixelSpacing" not in ds:
        return calibrated
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])
    return 1.0, 1.0


def _calibrated(ds: Dataset) -> bool:
    """Whether an image states its pixel size: Pixel Spacing or Imager Pixel Spacing
    above 0, or a calibrated ultrasound region."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return True
    return ultrasound_spacing(ds) is not None


def _load_projections(
    datasets: Sequence[Dataset],
    max_voxels: int,
    decode: Decode | None,
    release_pixels: bool,
    require_calibration: bool,
) -> tuple[Volume | None, list[Dataset], QualityReport]:
    """Projection radiographs (CR, DX, MG) and ultrasound images: images in Instance
    Number order, no slice geometry; MONOCHROME1 images inverted so that dense is bright
    on every image."""
    ordered = sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    if require_calibration and not all(_calibrated(ds) for ds in ordered):
        issue = QualityIssue(
            "pixel-spacing",
            "no pixel size: neither Pixel Spacing, Imager Pixel Spacing nor a calibrated "
            "ultrasound region (the model measures in mm)",
        )
        return None, ordered, (issue,)
    declared = sum(declared_voxels(ds) for ds in ordered)
    if declared > max_voxels:
        issue = QualityIssue(
            "size", f"{declared} pixels declared, more than the {max_voxels} allowed"
        )
        return None, ordered, (issue,)
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in ordered}
    if len(sizes) > 1:
        return None, ordered, (QualityIssue("size", f"{len(sizes)} different image sizes"),)
    inverted = [ds.get("PhotometricInterpretation", "") == "MONOCHROME1" for ds in ordered]
    voxels = np.empty((len(ordered), *sizes.pop()), np.float32)
    if not _fill(ordered, decode, voxels, release_pixels):
        return None, ordered, (QualityIssue("size", "decoded images differ in size"),)
    for k, flip in enumerate(inverted):
        if flip:  # PS3.3 C.7.6.3.1.2: the minimum is white
            voxels[k] = voxels[k].max() + voxels[k].min() - voxels[k]
    row_mm, col_mm = _projection_spacing(ordered[0])
    volume = Volume(
        voxels=voxels,
        spacing_mm=(1.0, row_mm, col_mm),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
        frame_of_reference_uid=str(ordered[0].get("FrameOfReferenceUID", "")),
        series_instance_uid=str(ordered[0].SeriesInstanceUID),
        study_instance_uid=str(ordered[0].StudyInstanceUID),
    )
    return volume, ordered, ()


def _trigger_key(ds: Dataset) -> tuple[float, int]:
    """Time in the cardiac cycle: Trigger Time (0018,1060), then Instance Number."""
    try:
        trigger = float(ds.get("TriggerTime", 0) or 0)
    except (TypeError, ValueError):
        trigger = 0.0
    return trigger, int(ds.get("InstanceNumber", 0) or 0)


def _load_cine(
    datasets: Sequence[Dataset], max_voxels: int, decode: Decode | None, release_pixels: bool
) -> tuple[Volume | None, list[Dataset], QualityReport]:
    """A cine series: the same phases of the cardiac cycle at one or more positions.

    Images are grouped by position along the slice normal (to 0.01 mm), positions in
    order along it, and each position's images in Trigger Time order. Every position
    must have the same number of phases (blocking "cine" issue otherwise).
    """
    ordered, issues = _sort(datasets)
    if any(i.check == "geometry" for i in issues):
        return None, ordered, tuple(issues)
    normal = _normal(ordered[0])
    assert normal is not None  # _sort reported a geometry issue otherwise
    groups: dict[float, list[Dataset]] = {}
    for ds in ordered:
        key = round(float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))), 2)
        groups.setdefault(key, []).append(ds)
    counts = sorted({len(g) for g in groups.values()})
    if len(counts) > 1:
        issues.append(QualityIssue("cine", f"positions have different numbers of phases: {counts}"))
        return None, ordered, tuple(issues)
    phases = counts[0]
    if phases < 2:
        issues.append(QualityIssue("cine", "one image per position: not a cine series"))
        return None, ordered, tuple(issues)
    ordered = [ds for key in sorted(groups) for ds in sorted(groups[key], key=_trigger_key)]
    first = ordered[0]
    if "PixelSpacing" not in first:
        issues.append(QualityIssue("pixel-spacing", "PixelSpacing missing"))
    declared = sum(declared_voxels(ds) for ds in ordered)
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in ordered}
    if declared > max_voxels or len(sizes) > 1:
        message = (
            f"{declared} pixels declared, more than the {max_voxels} allowed"
            if declared > max_voxels
            else f"{len(sizes)} different image sizes"
        )
        issues.append(QualityIssue("size", message))
        return None, ordered, tuple(issues)
    if len(groups) > 1:
        where = [
            float(np.dot(normal, np.asarray(groups[k][0].ImagePositionPatient, float)))
            for k in sorted(groups)
        ]
        spacing, more = _spacing_issues(np.array(where))
        issues += more
    else:
        spacing = float(first.get("SliceThickness", 1.0) or 1.0)
    voxels = np.empty((len(ordered), *sizes.pop()), np.float32)
    if not _fill(ordered, decode, voxels, release_pixels):
        issues.append(QualityIssue("size", "decoded images differ in size"))
        return None, ordered, tuple(issues)
    row_mm, col_mm = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    volume = Volume(
        voxels=voxels,
        spacing_mm=(spacing, row_mm, col_mm),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        series_instance_uid=str(first.SeriesInstanceUID),
        study_instance_uid=str(first.StudyInstanceUID),
        phases=phases,
        image_orientation_patient=_orientation_of(first),
    )
    return volume, ordered, tuple(issues)


def load_volume(
    datasets: Sequence[Dataset],
    max_voxels: int = MAX_VOXELS,
    decode: Decode | None = None,
    *,
    release_pixels: bool = False,
    projection: bool = False,
    require_calibration: bool = False,
    cine: bool = False,
) -> tuple[Volume | None, list[Dataset], QualityReport]:
    """Sort a series' images into a volume and check it.

    Parameters
    ----------
    datasets:
        Single-frame images of one series (with pixel data).
    max_voxels:
        The most pixels the series may declare in all; above it nothing is decoded and
        a blocking "size" issue is returned.
    decode:
        Decodes the images that need a codec, e.g. in a separate process
        (:class:`.decode.IsolatedDecoder`); ``None`` decodes them here.
    release_pixels:
        Drop each dataset's Pixel Data once it is in the volume (the encoders read
        headers only): the series is then held once, as the volume, not twice. Peak
        memory is about the volume (4 bytes a pixel) plus one image.
    projection:
        The images are projection radiographs (a manifest's ``preprocess.geometry =
        "projection"``): no slice geometry or pixel spacing is required, one image is
        enough, and MONOCHROME1 images are inverted. The pixel size is Pixel Spacing,
        else Imager Pixel Spacing, else the ultrasound regions' calibration, else 1 mm.
    require_calibration:
        With ``projection``: an image that states no pixel size at all is a blocking
        "pixel-spacing" issue (a model that measures in mm, manifest
        ``preprocess.require_calibration``).
    cine:
        The series is cine MR (``preprocess.geometry = "cine"``): each position's images
        are the phases of one cardiac cycle, kept in Trigger Time order
        (:class:`~dicom_ai_node.domain.Volume` ``phases``).

    Returns
    -------
    tuple
        The volume (``None`` when a blocking check failed before the pixels could be
        stacked), the datasets in volume order, and every quality issue found.
    """
    if not datasets:
        return None, [], (QualityIssue("slices", "no images"),)
    if cine:
        return _load_cine(datasets, max_voxels, decode, release_pixels)
    if projection:
        return _load_projections(datasets, max_voxels, decode, release_pixels, require_calibration)
    ordered, issues = _sort(datasets)
    first = ordered[0]
    if "PixelSpacing" not in first:
        issues.append(QualityIssue("pixel-spacing", "PixelSpacing missing"))
    declared = sum(declared_voxels(ds) for ds in ordered)
    if declared > max_voxels:
        issues.append(
            QualityIssue("size", f"{declared} pixels declared, more than the {max_voxels} allowed")
        )
        return None, ordered, tuple(issues)
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in ordered}
    if len(sizes) > 1:
        issues.append(QualityIssue("size", f"{len(sizes)} different image sizes"))
        return None, ordered, tuple(issues)
    normal = _normal(first)
    positions = (
        np.array(
            [float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for ds in ordered]
        )
        if normal is not None and not any(i.check == "geometry" for i in issues)
        else np.arange(len(ordered), dtype=float)
    )
    spacing, more = _spacing_issues(positions)
    issues += more
    row_mm, col_mm = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    voxels = np.empty((len(ordered), *sizes.pop()), np.float32)
    if not _fill(ordered, decode, voxels, release_pixels):
        issues.append(QualityIssue("size", "decoded images differ in size"))
        return None, ordered, tuple(issues)
    volume = Volume(
        voxels=voxels,
        spacing_mm=(spacing, row_mm, col_mm),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        series_instance_uid=str(first.SeriesInstanceUID),
        study_instance_uid=str(first.StudyInstanceUID),
        image_orientation_patient=_orientation_of(first),
    )
    return volume, ordered, tuple(issues)
