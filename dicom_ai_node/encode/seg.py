"""Encode: a model's label map -> one binary DICOM Segmentation (PS3.3 A.51), or
its saliency maps -> one FRACTIONAL Segmentation.

One segment per label that has voxels, numbered 1..n in label order; empty frames are
left out. BINARY (not LABELMAP) because OHIF 3.13's adapters shift colours and labels
of highdicom's LABELMAP SEG by one (docs/architecture.md, FACTS). A classifier's
saliency maps are FRACTIONAL (PS3.3 C.8.20.2.3, Segmented Property Type Saliency,
130404 DCM): highdicom 0.28 cannot build a Parametric Map of a projection radiograph,
which has no Frame of Reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from ..domain import Code, ModelOutput, OutputLabel
from ..errors import EncodeError
from .common import EncodeContext, coded, finish
from .uids import result_uid, tracking_uid

__all__ = [
    "build_saliency_seg",
    "build_seg",
    "check_label_map",
    "label_slice_counts",
    "segment_labels",
]

#: Segmented Property Type of a saliency map (PS3.16 CID 7180 family).
SALIENCY = Code("130404", "DCM", "Saliency")


def label_slice_counts(
    label_map: npt.NDArray[np.uint8], labels: Sequence[OutputLabel]
) -> dict[int, npt.NDArray[np.int64]]:
    """Voxels of each label per slice: label value -> (slices,) counts.

    One comparison per label (about 30 ms for 300 x 512 x 512); ``np.bincount`` of the
    whole map would take 1.5 s because it widens every voxel to int64.
    """
    result: dict[int, npt.NDArray[np.int64]] = {}
    for label in labels:
        counts: npt.NDArray[np.int64] = (label_map == label.value).sum(axis=(1, 2))
        result[label.value] = counts
    return result


def segment_labels(
    labels: Sequence[OutputLabel], counts: dict[int, npt.NDArray[np.int64]]
) -> list[OutputLabel]:
    """The labels that become segments, in segment-number order (label value order).

    A label without voxels gets no segment: an empty segment says nothing and some
    viewers trip over it.
    """
    return [label for label in sorted(labels, key=lambda x: x.value) if counts[label.value].any()]


def check_label_map(
    output: ModelOutput, source: Sequence[Dataset]
) -> dict[int, npt.NDArray[np.int64]]:
    """Check the label map against the source and the labels; return per-slice counts.

    Raises
    ------
    EncodeError
        If the shape or dtype does not fit, or a value has no :class:`OutputLabel`.
    """
    label_map = output.label_map
    if label_map is None:
        raise EncodeError("model output has no label map")
    shape = (len(source), int(source[0].Rows), int(source[0].Columns))
    if label_map.shape != shape:
        raise EncodeError(f"label map shape {label_map.shape} does not match the source {shape}")
    if label_map.dtype != np.uint8:
        raise EncodeError(f"label map must be uint8, not {label_map.dtype}")
    values = [label.value for label in output.labels]
    if len(set(values)) != len(values) or not all(1 <= v <= 255 for v in values):
        raise EncodeError(f"output label values must be unique and in 1..255, got {values}")
    counts = label_slice_counts(label_map, output.labels)
    described = sum(int(c.sum()) for c in counts.values())
    if described != int(np.count_nonzero(label_map)):
        unknown = sorted(set(np.unique(label_map).tolist()) - {0, *values})
        raise EncodeError(f"label map holds values {unknown} that no output label describes")
    return counts


def _segment_array(
    label_map: npt.NDArray[np.uint8], labels: Sequence[OutputLabel]
) -> npt.NDArray[np.uint8]:
    """Renumber label values to segment numbers 1..n (highdicom's label-map input).

    ``labels`` are exactly the values present in the map (see :func:`check_label_map`),
    so the map is already numbered right when they are 1..n.
    """
    if all(label.value == number for number, label in enumerate(labels, start=1)):
        return label_map
    lut = np.zeros(256, np.uint8)
    for number, label in enumerate(labels, start=1):
        lut[label.value] = number
    result: npt.NDArray[np.uint8] = lut[label_map]
    return result


def _describe(ctx: EncodeContext, number: int, label: OutputLabel) -> hd.seg.SegmentDescription:
    """Segment Sequence item (PS3.3 C.8.20.2) with codes, colour and algorithm.

    A label with a laterality (a paired structure coded without its side, e.g. the
    hippocampus) gets it in the Segmented Property Type Modifier Code Sequence
    (0062,0011), nested in the type's item (PS3.3 Table 10-25 via C.8.20.2);
    highdicom's constructor has no argument for it.
    """
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.name,
        segmented_property_category=coded(label.category),
        segmented_property_type=coded(label.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=ctx.algorithm_sequence(),
        tracking_uid=tracking_uid(ctx.job_key, label.value),
        tracking_id=label.name,
        display_color=hd.color.CIELabColor.from_rgb(*label.color_rgb),
    )
    if label.laterality is not None:
        property_type = description.SegmentedPropertyTypeCodeSequence[0]
        property_type.SegmentedPropertyTypeModifierCodeSequence = [coded(label.laterality)]
    return description


#: One part of a series that gets its own SEG: its images, their index in the label
#: map, the SEG's Instance Number and what its SOP Instance UID adds to the job's parts.
_Part = tuple[list[Dataset], slice | list[int], int, tuple[str, ...]]


def _position(ds: Dataset) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in ds.get("ImagePositionPatient", []))


def _parts(source: Sequence[Dataset]) -> list[_Part]:
    """One SEG for the series, or several when its images do not form one volume.

    * Images without a Frame of Reference (radiographs, ultrasound stills) share no
      space: a Segmentation of such images has exactly one source frame (highdicom
      enforces it), so each image gets its own SEG.
    * Images that repeat positions (a cine series: every phase at each position) cannot
      share a SEG either (plane positions must be unique): the k-th image at each
      position goes into SEG k, so each SEG holds one phase at every position.

    The SEGs share one series. The single part keeps the UIDs a one-SEG job always had.
    """
    if len(source) > 1 and any("FrameOfReferenceUID" not in ds for ds in source):
        return [([ds], [k], k + 1, (str(k + 1),)) for k, ds in enumerate(source)]
    seen: dict[tuple[float, ...], int] = {}
    layer = []
    for ds in source:
        key = _position(ds)
        layer.append(seen.get(key, 0))
        seen[key] = layer[-1] + 1
    if max(layer) == 0:
        return [(list(source), slice(None), 1, ())]
    out: list[_Part] = []
    for k in range(max(layer) + 1):
        index = [i for i, n in enumerate(layer) if n == k]
        out.append(([source[i] for i in index], index, k + 1, (str(k + 1),)))
    return out


def build_seg(
    ctx: EncodeContext,
    output: ModelOutput,
    counts: dict[int, npt.NDArray[np.int64]] | None = None,
) -> list[Dataset]:
    """Build the Segmentation of ``output.label_map`` (PS3.3 A.51, C.8.20).

    Parameters
    ----------
    ctx:
        The job's shared context; the SEG goes into the source study as a new series.
    output:
        The model output; ``label_map`` has the source's shape (slices, rows, columns).
    counts:
        What :func:`check_label_map` returned, when the caller already ran it.

    Returns
    -------
    list[pydicom.Dataset]
        The SEG (one per image with labels when the images have no Frame of Reference,
        see :func:`_parts`); empty when the label map is absent or has no labelled voxel.

    Raises
    ------
    EncodeError
        If the label map does not fit the source or holds undescribed values.
    """
    if output.label_map is None:
        return []
    if counts is None:
        counts = check_label_map(output, ctx.source)
    out = []
    for images, part, number, suffix in _parts(ctx.source):
        labels = segment_labels(output.labels, {v: c[part] for v, c in counts.items()})
        if labels:
            out.append(_binary_seg(ctx, images, output.label_map[part], labels, number, suffix))
    return out


def _binary_seg(
    ctx: EncodeContext,
    images: list[Dataset],
    label_map: npt.NDArray[np.uint8],
    labels: list[OutputLabel],
    number: int,
    suffix: tuple[str, ...],
) -> Dataset:
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=_segment_array(label_map, labels),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        pixel_measures=_placeholder_measures(images[0]),
        segment_descriptions=[_describe(ctx, n, label) for n, label in enumerate(labels, 1)],
        series_instance_uid=result_uid(ctx.job_key, "seg", "series"),
        series_number=ctx.series_number,
        sop_instance_uid=result_uid(ctx.job_key, "seg", "instance", *suffix),
        instance_number=number,
        manufacturer=ctx.algorithm.manufacturer,
        manufacturer_model_name=ctx.algorithm.name,
        software_versions=ctx.algorithm.version,
        device_serial_number=ctx.algorithm.device_uid,
        content_description=ctx.series_description("segmentation"),
        series_description=ctx.series_description("SEG"),
        omit_empty_frames=True,
        workers=0,
        content_date=ctx.content_datetime.date(),
        content_time=ctx.content_datetime.time(),
        series_date=ctx.content_datetime.date(),
        series_time=ctx.content_datetime.time(),
        contributing_equipment=ctx.equipment(),
    )
    finish(seg, ctx)
    _fit_projection(seg, images[0])
    _pin_dimension_organization(seg, result_uid(ctx.job_key, "seg", "dimension-organization"))
    return seg


def _pin_dimension_organization(seg: Dataset, uid: str) -> None:
    # highdicom draws a random Dimension Organization UID (PS3.3 C.7.6.17) and takes no
    # parameter for it; replacing it with a job-derived UID keeps re-encodes identical.
    old = seg.DimensionOrganizationSequence[0].DimensionOrganizationUID
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = uid
    for item in seg.DimensionIndexSequence:
        if item.DimensionOrganizationUID == old:
            item.DimensionOrganizationUID = uid


def _saliency_description(
    ctx: EncodeContext, number: int, label: OutputLabel
) -> hd.seg.SegmentDescription:
    """Segment of a label's saliency map: the label's category, type Saliency."""
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"{label.name} saliency",
        segmented_property_category=coded(label.category),
        segmented_property_type=coded(SALIENCY),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=ctx.algorithm_sequence(),
        tracking_uid=tracking_uid(ctx.job_key, label.value),
        tracking_id=label.name,
        display_color=hd.color.CIELabColor.from_rgb(*label.color_rgb),
    )


def _positive_spacing(ds: Dataset) -> bool:
    value = ds.get("PixelSpacing")
    return value is not None and len(value) == 2 and all(float(v) > 0 for v in value)


def _placeholder_measures(source: Dataset) -> hd.PixelMeasuresSequence | None:
    """highdicom needs a pixel spacing; a source without a real one (a projection
    radiograph with Pixel Spacing absent or 0) gets a placeholder that
    :func:`_fit_projection` removes again."""
    if _positive_spacing(source) or "FrameOfReferenceUID" in source:
        return None
    return hd.PixelMeasuresSequence(pixel_spacing=[1.0, 1.0], slice_thickness=None)


def _fit_projection(seg: Dataset, source: Dataset) -> None:
    # A source without a Frame of Reference (a projection radiograph) gives a SEG without
    # plane positions; its General Image module then needs Patient Orientation (Type 2C,
    # PS3.3 C.7.6.1), which highdicom does not copy. A source whose Pixel Spacing is
    # absent or zero (as CR often has) gives no Pixel Measures: zero is not a spacing.
    if "FrameOfReferenceUID" in source:
        return
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    if not _positive_spacing(source):
        for item in seg.SharedFunctionalGroupsSequence:
            if "PixelMeasuresSequence" in item:
                del item.PixelMeasuresSequence


def build_saliency_seg(ctx: EncodeContext, output: ModelOutput) -> list[Dataset]:
    """Build the FRACTIONAL Segmentation of ``output.saliency`` (PS3.3 A.51, C.8.20.2.3).

    Parameters
    ----------
    ctx:
        The job's shared context; the SEG goes into the source study as a new series.
    output:
        ``saliency`` maps label values to float maps of the source's shape in 0..1.

    Returns
    -------
    list[pydicom.Dataset]
        The SEG (one per image with a map when the images have no Frame of Reference,
        see :func:`_parts`): one segment per label with a non-zero map (value 1.0 stored
        as 255); empty when there is none.

    Raises
    ------
    EncodeError
        If a map does not fit the source or names a value no label describes.
    """
    shape = (len(ctx.source), int(ctx.source[0].Rows), int(ctx.source[0].Columns))
    by_value = {label.value: label for label in output.labels}
    for value in sorted(output.saliency):
        if value not in by_value:
            raise EncodeError(f"a saliency map refers to label value {value}, which no label has")
        if output.saliency[value].shape != shape:
            raise EncodeError(
                f"saliency map shape {output.saliency[value].shape} does not fit the source {shape}"
            )
    out = []
    for images, part, number, suffix in _parts(ctx.source):
        labels = [by_value[v] for v in sorted(output.saliency) if output.saliency[v][part].any()]
        if labels:
            stack = np.stack([output.saliency[label.value][part] for label in labels], axis=-1)
            out.append(_saliency_seg(ctx, images, stack, labels, number, suffix))
    return out


def _saliency_seg(
    ctx: EncodeContext,
    images: list[Dataset],
    stack: npt.NDArray[np.floating],
    labels: list[OutputLabel],
    number: int,
    suffix: tuple[str, ...],
) -> Dataset:
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=np.clip(stack, 0.0, 1.0).astype(np.float32),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[
            _saliency_description(ctx, n, label) for n, label in enumerate(labels, 1)
        ],
        series_instance_uid=result_uid(ctx.job_key, "seg", "series"),
        series_number=ctx.series_number,
        sop_instance_uid=result_uid(ctx.job_key, "seg", "instance", *suffix),
        instance_number=number,
        manufacturer=ctx.algorithm.manufacturer,
        manufacturer_model_name=ctx.algorithm.name,
        software_versions=ctx.algorithm.version,
        device_serial_number=ctx.algorithm.device_uid,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        pixel_measures=_placeholder_measures(images[0]),
        max_fractional_value=255,
        content_description=ctx.series_description("saliency"),
        series_description=ctx.series_description("saliency SEG"),
        omit_empty_frames=True,
        workers=0,
        content_date=ctx.content_datetime.date(),
        content_time=ctx.content_datetime.time(),
        series_date=ctx.content_datetime.date(),
        series_time=ctx.content_datetime.time(),
        contributing_equipment=ctx.equipment(),
    )
    finish(seg, ctx)
    _fit_projection(seg, images[0])
    _pin_dimension_organization(seg, result_uid(ctx.job_key, "seg", "dimension-organization"))
    return seg
