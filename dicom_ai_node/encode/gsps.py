"""Encode: outlines and measurements -> Grayscale Softcopy Presentation State (PS3.3 A.33.1).

No new pixels: vector graphics a viewer lays over the source images (PS3.4 N.2), for
PACS viewers that show neither SEG nor SR. Per source series one GSPS, with one Graphic
Layer per label (PS3.3 C.10.7), coloured like its SEG segment, holding its closed
outlines as POLYLINEs in PIXEL units on every slice that has it (one per region, bounded
in number and points) and its measurements as text on its key slice (where it is
largest, as in the SR); a caption layer (model, "not for diagnosis") on every image; the
source's Modality LUT and VOI window, INVERSE Presentation LUT for MONOCHROME1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..domain import ModelOutput, OutputLabel
from ..errors import EncodeError
from ..geometry import components
from .common import EncodeContext, finish
from .keyimages import CAPTION, measurement_line
from .seg import check_label_map
from .sr import outer_contour
from .uids import result_uid, tracking_uid
from .validate import validate_roundtrip

__all__ = [
    "MAX_POINTS",
    "MAX_REGIONS",
    "build_gsps",
    "layer_name",
    "region_outlines",
    "simplify_closed",
]

#: Most vertices of one outline (PS3.3 C.10.5.1.2 Number of Graphic Points); a longer
#: outline is simplified with a coarser tolerance until it fits.
MAX_POINTS = 256
#: Most regions of one label outlined on one slice, the largest first.
MAX_REGIONS = 16
#: Douglas-Peucker tolerance, in pixels, tried first.
_TOLERANCE_PX = 0.75

_Points = npt.NDArray[np.float32]


def _code_string(text: str) -> str:
    """A CS value (PS3.5 6.2) of at most 16 characters, e.g. ``L1_RIGHT_LUNG``."""
    return re.sub(r"[^A-Z0-9]+", "_", text.upper())[:16].rstrip("_")


def layer_name(label: OutputLabel) -> str:
    """Graphic Layer (PS3.3 C.10.7) of a label: ``L`` + its value + its name."""
    return _code_string(f"L{label.value}_{label.name}")


def simplify_closed(points: _Points, max_points: int = MAX_POINTS) -> _Points:
    """Fewer vertices for a closed (n, 2) outline, each of them one of its own vertices.

    Douglas-Peucker from the first vertex and the one farthest from it, with a tolerance
    of 0.75 pixel, doubled until at most ``max_points`` (>= 5) vertices remain; a
    simplification that would lose the outline's area is not taken.
    """
    ring = points[:-1].astype(np.float64)
    if len(ring) < 4:
        return points
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    closed = np.vstack([ring, ring[:1]])
    kept = list(range(len(ring)))
    tolerance = _TOLERANCE_PX
    while len(kept) + 1 > max_points or tolerance == _TOLERANCE_PX:
        keep = _douglas_peucker(ring, 0, far, tolerance) | _douglas_peucker(
            closed, far, len(ring), tolerance
        )
        fewer = sorted({k % len(ring) for k in keep})
        if len(fewer) < 3:  # it would lose its area: keep the last that did not
            break
        kept, tolerance = fewer, tolerance * 2  # the points halve, roughly: bounded
    if len(kept) + 1 > max_points:  # only a degenerate outline gets here: thin it evenly
        kept = kept[:: -(-len(kept) // (max_points - 1))]
    result = ring[kept]
    return np.vstack([result, result[:1]]).astype(np.float32)


def _douglas_peucker(ring: npt.NDArray[np.float64], first: int, last: int, tol: float) -> set[int]:
    """Indices of ``ring[first..last]`` that Douglas-Peucker keeps (both ends included)."""
    keep = {first, last}
    stack = [(first, last)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = ring[i], ring[j]
        inner = ring[i + 1 : j]
        d = b - a  # a != b: the ends are a polygon's vertex and the one farthest from it
        dist = np.abs(d[0] * (inner[:, 1] - a[1]) - d[1] * (inner[:, 0] - a[0])) / np.hypot(*d)
        k = int(np.argmax(dist))
        if float(dist[k]) > tol:
            keep.add(i + 1 + k)
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return keep


def region_outlines(mask: npt.NDArray[np.bool_]) -> list[_Points]:
    """Closed outlines of a slice's regions, largest first (PS3.3 C.10.5.1.2, PIXEL units).

    Each is the outer boundary of one 8-connected region along the pixel edges (see
    :func:`dicom_ai_node.encode.sr.outer_contour`), simplified by :func:`simplify_closed`;
    at most :data:`MAX_REGIONS` regions.
    """
    found = components(mask[np.newaxis])
    found.sort(key=lambda c: -int(c[1].sum()))
    outlines = []
    for (_, rows, cols), local in found[:MAX_REGIONS]:
        contour = outer_contour(local[0]) + np.array([cols.start, rows.start], np.float32)
        outlines.append(simplify_closed(contour))
    return outlines


def _layers(ctx: EncodeContext, labels: Sequence[OutputLabel]) -> list[hd.pr.GraphicLayer]:
    layers = [
        hd.pr.GraphicLayer(
            layer_name=layer_name(label),
            order=order,
            description=label.name[:64],
            display_color=hd.color.CIELabColor.from_rgb(*label.color_rgb),
        )
        for order, label in enumerate(labels, start=1)
    ]
    caption = hd.pr.GraphicLayer(
        "AI_CAPTION", len(labels) + 1, f"{ctx.algorithm.name} {ctx.algorithm.version}"[:64]
    )
    return [*layers, caption]


def _text_box(mask: npt.NDArray[np.bool_], lines: int) -> tuple[float, float, float, float]:
    """A PIXEL bounding box for a label's text: below the label, or above it near the bottom."""
    rows, cols = mask.shape
    ys, xs = np.nonzero(mask)
    height = min(float(rows), max(8.0, rows * 0.05) * lines)
    left = float(min(int(xs.min()), cols - 1))
    right = float(min(cols, left + max(cols * 0.5, 1.0)))
    below = float(ys.max() + 1)
    top = below if below + height <= rows else max(0.0, float(ys.min()) - height)
    return left, top, right, min(float(rows), top + height)


def _label_annotations(
    ctx: EncodeContext,
    label: OutputLabel,
    layer: hd.pr.GraphicLayer,
    planes: npt.NDArray[np.bool_],
    images: Sequence[Dataset],
    texts: Sequence[str],
) -> list[hd.pr.GraphicAnnotation]:
    """Outlines of one label on each image that has it; its text on the key slice.

    The graphic objects carry the label's Tracking UID, which its SEG segment and SR
    group carry too (PS3.3 C.10.5.1.2), so a viewer can tell they show one finding.
    """
    counts = planes.sum(axis=(1, 2))
    key = int(np.argmax(counts))
    result = []
    for k in np.flatnonzero(counts).tolist():
        objects = [
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=outline,
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                tracking_id=label.name[:64],
                tracking_uid=tracking_uid(ctx.job_key, label.value),
            )
            for outline in region_outlines(planes[k])
        ]
        text = None
        if k == key and texts:
            text = [
                hd.pr.TextObject(
                    text_value="\r\n".join([label.name, *texts])[:1024],
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    bounding_box=_text_box(planes[k], len(texts) + 1),
                    text_justification=hd.pr.TextJustificationValues.LEFT,
                )
            ]
        result.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[images[k]],
                graphic_layer=layer,
                graphic_objects=objects,
                text_objects=text,
            )
        )
    return result


def _caption(
    ctx: EncodeContext, layer: hd.pr.GraphicLayer, images: Sequence[Dataset], extra: Sequence[str]
) -> hd.pr.GraphicAnnotation:
    """The caption on every image, and measurements that have no outline to sit by."""
    lines = [f"{CAPTION}: {ctx.algorithm.name} {ctx.algorithm.version}", *extra]
    text = hd.pr.TextObject(
        text_value="\r\n".join(lines)[:1024],
        units=hd.pr.AnnotationUnitsValues.DISPLAY,
        bounding_box=(0.01, 0.01, 0.99, min(0.99, 0.02 + 0.04 * len(lines))),
        text_justification=hd.pr.TextJustificationValues.LEFT,
    )
    return hd.pr.GraphicAnnotation(
        referenced_images=list(images), graphic_layer=layer, text_objects=[text]
    )


def _first(value: object) -> float | None:
    """The first of a possibly multi-valued DS/IS (Window Center may hold several)."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


def source_window(ds: Dataset) -> tuple[float, float]:
    """Window Center and Width of an image (PS3.3 C.11.2.1.2), in modality units.

    The image's own first window; without one the range of its Smallest/Largest Image
    Pixel Value, or else of its stored values (Bits Stored, Pixel Representation),
    through its Rescale Slope and Intercept, so the whole range shows.
    """
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return center, width
    smallest, largest = ds.get("SmallestImagePixelValue"), ds.get("LargestImagePixelValue")
    if isinstance(smallest, int) and isinstance(largest, int) and largest > smallest:
        lo, hi = float(smallest), float(largest)
    else:
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        lo = -(2.0 ** (bits - 1)) if signed else 0.0
        hi = lo + 2.0**bits - 1
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    a, b = sorted((lo * slope + intercept, hi * slope + intercept))
    return (a + b + 1) / 2, b - a + 1


def _voi(images: Sequence[Dataset]) -> list[hd.pr.SoftcopyVOILUTTransformation]:
    """One VOI LUT item per distinct window, each naming its images when there are several."""
    groups: dict[tuple[float, float], list[Dataset]] = {}
    for ds in images:
        groups.setdefault(source_window(ds), []).append(ds)
    return [
        hd.pr.SoftcopyVOILUTTransformation(
            window_center=center,
            window_width=width,
            referenced_images=hd.ReferencedImageSequence(group) if len(groups) > 1 else None,
        )
        for (center, width), group in groups.items()
    ]


def _group(items: Sequence[Dataset], keywords: Sequence[str]) -> dict[tuple[str, ...], list[int]]:
    """Indices of ``items`` by the values of ``keywords``, in the order they first appear."""
    result: dict[tuple[str, ...], list[int]] = {}
    for index, ds in enumerate(items):
        result.setdefault(tuple(str(ds.get(k)) for k in keywords), []).append(index)
    return result


def build_gsps(ctx: EncodeContext, output: ModelOutput) -> list[Dataset]:
    """Build one Grayscale Softcopy Presentation State per source series (PS3.3 A.33.1).

    Parameters
    ----------
    ctx:
        The job's shared context; ``ctx.source`` sorted like ``output.label_map``.
    output:
        The model output: outlines come from its label map, text from its measurements.

    Returns
    -------
    list[pydicom.Dataset]
        One GSPS per grayscale source series (Series Number ``ctx.series_number`` + 5,
        all in one result series), each passed :func:`validate_roundtrip`; empty when
        there is nothing to draw (no labelled voxel and no measurement). A colour series
        gets none: a grayscale presentation state cannot apply to it (PS3.3 C.11.6).

    Raises
    ------
    EncodeError
        If the label map does not fit the source or highdicom refuses an attribute.
    """
    counts = check_label_map(output, ctx.source) if output.label_map is not None else None
    texts: dict[int, list[str]] = {}
    for m in output.measurements:
        texts.setdefault(m.label_value, []).append(measurement_line(m))
    labels = sorted(output.labels, key=lambda x: x.value)
    drawn = [x for x in labels if counts is not None and counts[x.value].any()]
    if not drawn and not texts:
        return []
    layers = _layers(ctx, drawn)
    results: list[Dataset] = []
    try:
        for (series_uid,), indices in _group(ctx.source, ["SeriesInstanceUID"]).items():
            images = [ctx.source[i] for i in indices]
            if all(int(ds.get("SamplesPerPixel", 1)) == 1 for ds in images):
                annotations = _annotations(ctx, output, indices, layers, texts)
                results.append(
                    _gsps(ctx, series_uid, len(results) + 1, images, layers, annotations)
                )
    except (ValueError, TypeError) as exc:  # highdicom's constructor checks
        raise EncodeError(f"cannot build the GSPS of job {ctx.job_key}: {exc}") from exc
    for ds in results:
        validate_roundtrip(ds)
    return results


def _annotations(
    ctx: EncodeContext,
    output: ModelOutput,
    indices: Sequence[int],
    layers: Sequence[hd.pr.GraphicLayer],
    texts: dict[int, list[str]],
) -> list[hd.pr.GraphicAnnotation]:
    """The annotations of one series: each label's, then the caption per image size."""
    images = [ctx.source[i] for i in indices]
    names = {layer_name(x): x for x in output.labels}
    result = []
    placed = set()
    for layer in layers[:-1]:
        label = names[layer.GraphicLayer]
        assert output.label_map is not None  # a label gets a layer only for its voxels
        planes = output.label_map[list(indices)] == label.value
        if planes.any():
            found = texts.get(label.value, [])
            result += _label_annotations(ctx, label, layer, planes, images, found)
            placed.add(label.value)
    unplaced = [
        f"{x.name}: {t}"
        for x in sorted(output.labels, key=lambda x: x.value)
        if x.value not in placed
        for t in texts.get(x.value, [])
    ]
    for same_size in _group(images, ["Rows", "Columns"]).values():
        result.append(_caption(ctx, layers[-1], [images[i] for i in same_size], unplaced))
    return result


def _gsps(
    ctx: EncodeContext,
    series_uid: str,
    number: int,
    images: Sequence[Dataset],
    layers: Sequence[hd.pr.GraphicLayer],
    annotations: Sequence[hd.pr.GraphicAnnotation],
) -> Dataset:
    """One GSPS through highdicom's constructor; then :func:`finish` and the creation time."""
    inverse = images[0].get("PhotometricInterpretation") == "MONOCHROME1"
    when = ctx.content_datetime
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=images,
        **ctx.series_arguments("GSPS"),
        sop_instance_uid=result_uid(ctx.job_key, "gsps", "instance", series_uid),
        instance_number=number,
        content_label=_code_string(f"AI_{ctx.algorithm.name}"),
        content_description=f"{ctx.algorithm.name} {ctx.algorithm.version} outlines"[:64],
        graphic_annotations=list(annotations),
        graphic_layers=list(layers),
        voi_lut_transformations=_voi(images),
        presentation_lut_transformation=hd.PresentationLUTTransformation(
            presentation_lut_shape="INVERSE" if inverse else "IDENTITY"
        ),
        contributing_equipment=ctx.equipment(),
        specific_character_set="ISO_IR 192",
    )
    finish(gsps, ctx)
    # highdicom stamps the presentation's creation with the wall clock (PS3.3 C.11.10);
    # pinned like Instance Creation so that two encodings of one job are identical.
    gsps.PresentationCreationDate = when.strftime("%Y%m%d")
    gsps.PresentationCreationTime = when.strftime("%H%M%S.%f")
    # Laterality (PS3.3 C.7.3.1, Type 2C), which highdicom has no parameter for: that of
    # the source series (or of its image), else empty (unknown), as dciodvfy asks.
    sides = (images[0].get(k) for k in ("Laterality", "ImageLaterality"))
    gsps.Laterality = next((side for side in sides if side in ("R", "L")), "")
    return gsps
