"""Encode: measurements and findings -> TID 1500 Comprehensive 3D SR (PS3.3 A.35.13).

Two documents, because one measurement group without geometry stops OHIF 3.13 from
showing any group of its SR (docs/architecture.md, FACTS):

* the *measurement SR*: one TID 1410 planar ROI group per label that has voxels and
  measurements. Its SCOORD is the label's outer contour on the slice where the label is
  largest, so a viewer can draw it and jump there; its NUMs are the label's measurements
  (e.g. the volume of the whole label, which the SEG segment with the same Tracking UID
  delineates).
* the *findings SR*: TID 1501 groups without geometry: quality issues and measurements
  of labels that have no voxels (or of a model without a label map).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from ..domain import Evaluation, Measurement, ModelOutput, OutputLabel, QualityIssue
from ..geometry import largest_component
from .common import EncodeContext, coded, finish
from .uids import result_uid, tracking_uid

__all__ = ["build_findings_sr", "build_measurement_sr", "outer_contour"]

_Group: TypeAlias = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)

#: Anatomical Structure (123037004, SCT): labels of this category are their own finding site.
_ANATOMICAL_STRUCTURE = ("123037004", "SCT")

#: Procedure Reported (CID 100) by source Modality; anything else is "Imaging procedure".
_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "MR": codes.LN.MRIUnspecifiedBodyRegion,
    "NM": codes.LN.NMUnspecifiedBodyRegion,
    "PT": codes.LN.PETUnspecifiedBodyRegion,
    "CR": codes.LN.XRUnspecifiedBodyRegion,
    "DX": codes.LN.XRUnspecifiedBodyRegion,
}


def _observation_context(ctx: EncodeContext) -> hd.sr.ObservationContext:
    """The model as device observer (PS3.16 TID 1002, TID 1004)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=ctx.algorithm.device_uid,
        name=f"{ctx.algorithm.name} {ctx.algorithm.version}",
        manufacturer_name=ctx.algorithm.manufacturer,
        model_name=ctx.algorithm.name,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _report(
    ctx: EncodeContext,
    groups: Sequence[_Group],
    images: Sequence[Dataset],
    *,
    part: str,
    series_offset: int,
    kind: str,
) -> Dataset:
    """Wrap measurement groups in TID 1500 and a Comprehensive 3D SR (PS3.3 A.35.13)."""
    modality = str(getattr(ctx.source[0], "Modality", ""))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(ctx),
        procedure_reported=_PROCEDURES.get(modality, codes.SCT.ImagingProcedure),
        imaging_measurements=list(groups),
        referenced_images=[ds for ds in images if _describable(ds)] or None,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(ctx.source),
        content=report,
        series_instance_uid=result_uid(ctx.job_key, part, "series"),
        series_number=ctx.series_number + series_offset,
        sop_instance_uid=result_uid(ctx.job_key, part, "instance"),
        instance_number=1,
        manufacturer=ctx.algorithm.manufacturer,
        is_complete=True,  # the model adds nothing later
        is_final=True,  # FINAL + UNVERIFIED: final machine output, no human verified it
        series_description=ctx.series_description(kind),
        manufacturer_model_name=ctx.algorithm.name,
        software_versions=ctx.algorithm.version,
        device_serial_number=ctx.algorithm.device_uid,
        content_date=ctx.content_datetime.date(),
        content_time=ctx.content_datetime.time(),
        series_date=ctx.content_datetime.date(),
        series_time=ctx.content_datetime.time(),
        contributing_equipment=ctx.equipment(),
        previous_versions=list(ctx.predecessors) or None,
    )
    finish(sr, ctx)
    return sr


def _describable(image: Dataset) -> bool:
    """Whether highdicom can describe the image in the Image Library (TID 1601, 1602).

    A projection radiograph (no Frame of Reference) needs Patient Orientation and Imager
    Pixel Spacing there; CR images often lack the latter. The library is optional (U in
    TID 1500), so such an image is left out of it; the SCOORD still references it.
    """
    if "FrameOfReferenceUID" in image:
        return True
    orientation = image.get("PatientOrientation")
    return orientation is not None and len(orientation) == 2 and "ImagerPixelSpacing" in image


def _finding_sites(label: OutputLabel) -> list[hd.sr.FindingSite] | None:
    """Finding Site (363698007, SCT, TID 1419): where the label lies, if the model says.

    A lesion's site is the structure around it (``OutputLabel.finding_site``, e.g. the
    right lung around a nodule); an anatomical label is its own site.
    """
    laterality = coded(label.laterality) if label.laterality is not None else None
    if label.finding_site is not None:
        site = label.finding_site
    elif (label.category.value, label.category.scheme_designator) == _ANATOMICAL_STRUCTURE:
        site = label.type
    else:
        return None
    return [hd.sr.FindingSite(anatomic_location=coded(site), laterality=laterality)]


def _measurements(items: Sequence[Measurement]) -> list[hd.sr.Measurement]:
    """NUM content items (PS3.16 TID 300) with UCUM units as the model gave them."""
    return [
        hd.sr.Measurement(
            name=coded(m.concept),
            value=float(m.value),
            unit=coded(m.unit),
            derivation=coded(m.derivation) if m.derivation is not None else None,
        )
        for m in items
    ]


def _evaluations(items: Sequence[Evaluation]) -> list[hd.sr.QualitativeEvaluation] | None:
    """CODE content items (PS3.16 TID 1501/1410 "Qualitative Evaluations")."""
    return [hd.sr.QualitativeEvaluation(coded(e.concept), coded(e.value)) for e in items] or None


def _tracking(ctx: EncodeContext, label: OutputLabel) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(
        uid=tracking_uid(ctx.job_key, label.value), identifier=label.name
    )


def _planar_group(
    ctx: EncodeContext,
    label: OutputLabel,
    label_map: npt.NDArray[np.uint8],
    slice_counts: npt.NDArray[np.int64],
    items: Sequence[Measurement],
    evaluations: Sequence[Evaluation] = (),
) -> tuple[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, Dataset]:
    """TID 1410 group for one label; returns it with the source slice its SCOORD is on."""
    k = int(np.argmax(slice_counts))
    image = ctx.source[k]
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=outer_contour(label_map[k] == label.value),
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(ctx, label),
        referenced_region=region,
        finding_type=coded(label.type),
        finding_category=coded(label.category),
        algorithm_id=ctx.algorithm_id(),
        finding_sites=_finding_sites(label),
        measurements=_measurements(items),
        qualitative_evaluations=_evaluations(evaluations),
    )
    return group, image


def _by_label(output: ModelOutput) -> dict[int, list[Measurement]]:
    result: dict[int, list[Measurement]] = {}
    for m in output.measurements:
        result.setdefault(m.label_value, []).append(m)
    return result


def build_measurement_sr(
    ctx: EncodeContext, output: ModelOutput, counts: dict[int, npt.NDArray[np.int64]]
) -> Dataset | None:
    """Build the SR with one geometric measurement group per label (PS3.16 TID 1500, 1410).

    Parameters
    ----------
    ctx:
        The job's shared context.
    output:
        The model output; only labels with voxels in ``label_map`` and at least one
        measurement get a group.
    counts:
        Per-slice voxel counts per label value, from
        :func:`dicom_ai_node.encode.seg.check_label_map`.

    Returns
    -------
    pydicom.Dataset | None
        The SR (series number +1), or ``None`` when no label qualifies.
    """
    if output.label_map is None:
        return None
    measured = _by_label(output)
    groups: list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations] = []
    images: list[Dataset] = []
    for label in sorted(output.labels, key=lambda x: x.value):
        if not measured.get(label.value) or not counts[label.value].any():
            continue
        group, image = _planar_group(
            ctx,
            label,
            output.label_map,
            counts[label.value],
            measured[label.value],
            [e for e in output.evaluations if e.label_value == label.value],
        )
        groups.append(group)
        if all(image is not seen for seen in images):
            images.append(image)
    if not groups:
        return None
    return _report(ctx, groups, images, part="sr", series_offset=1, kind="SR")


#: Values of the (130550, DCM) "Imaging Series Quality" evaluation (PS3.16 Annex D).
_UNUSABLE = codes.DCM.UnusableQualityRendersImageUnusable
_BELOW_STANDARD = codes.DCM.UsableDoesNotMeetTheQualityControlStandard


def _issue_group(
    ctx: EncodeContext, index: int, issue: QualityIssue
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group for one quality issue (PS3.16 TID 1501).

    The evaluation is coded: Imaging Series Quality = usable but below the standard
    (non-blocking) or unusable (blocking). highdicom's TID 1501 has no free-text row, so
    the check's name and message are the group's human-readable Tracking Identifier.
    """
    evaluation = hd.sr.QualitativeEvaluation(
        name=codes.DCM.ImagingSeriesQuality,
        value=_UNUSABLE if issue.blocking else _BELOW_STANDARD,
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid(ctx.job_key, "findings", "quality", str(index), issue.check),
            identifier=f"{issue.check}: {issue.message}",
        ),
        finding_type=codes.DCM.QualityIssue,
        algorithm_id=ctx.algorithm_id(),
        qualitative_evaluations=[evaluation],
    )


def _label_group(
    ctx: EncodeContext,
    label: OutputLabel,
    items: Sequence[Measurement],
    evaluations: Sequence[Evaluation] = (),
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group for the measurements of a label that has no voxels to point at."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(ctx, label),
        finding_type=coded(label.type),
        finding_category=coded(label.category),
        algorithm_id=ctx.algorithm_id(),
        finding_sites=_finding_sites(label),
        measurements=_measurements(items) or None,
        qualitative_evaluations=_evaluations(evaluations),
    )


def build_findings_sr(
    ctx: EncodeContext, output: ModelOutput, counts: dict[int, npt.NDArray[np.int64]] | None
) -> Dataset | None:
    """Build the SR of study-level findings without geometry (PS3.16 TID 1500, 1501).

    Parameters
    ----------
    ctx:
        The job's shared context.
    output:
        Its ``quality_issues`` each become a group, and so do the measurements of
        labels that got no geometric group (no voxels, or no label map at all).
    counts:
        Per-slice voxel counts per label value, or ``None`` without a label map.

    Returns
    -------
    pydicom.Dataset | None
        The SR (series number +2), or ``None`` when there is nothing to report.
    """
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations] = []
    measured = _by_label(output)
    for label in sorted(output.labels, key=lambda x: x.value):
        has_voxels = counts is not None and bool(counts[label.value].any())
        evaluations = [e for e in output.evaluations if e.label_value == label.value]
        if (measured.get(label.value) or evaluations) and not has_voxels:
            groups.append(_label_group(ctx, label, measured.get(label.value, []), evaluations))
    groups.extend(_issue_group(ctx, i, issue) for i, issue in enumerate(output.quality_issues))
    if not groups:
        return None
    return _report(ctx, groups, [], part="findings", series_offset=2, kind="findings SR")


def outer_contour(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """Outer boundary of the largest 8-connected component, along pixel edges.

    The vertices are pixel corners in image coordinates (column, row), where (0, 0) is
    the top left corner of the top left pixel (PS3.3 C.18.6.1.1), clockwise on screen
    and closed (last point = first point, PS3.3 C.18.6.1.2). The polygon runs along the
    outside of the boundary pixels, so its area is the component's pixel count plus that
    of any holes in it.

    Parameters
    ----------
    mask:
        (rows, columns) boolean image with at least one ``True`` pixel.

    Returns
    -------
    numpy.ndarray
        (n, 2) float32 vertices, n >= 5.
    """
    component = largest_component(mask)
    fg = np.zeros((component.shape[0] + 2, component.shape[1] + 2), bool)
    fg[1:-1, 1:-1] = component  # fg[row + 1, col + 1]: no bounds checks below

    def filled(x: int, y: int, dx: int, dy: int, nx: int, ny: int) -> bool:
        # the pixel spanned by the edge (x, y) -> (x + dx, y + dy) and the normal (nx, ny)
        return bool(fg[y + min(0, dy) + min(0, ny) + 1, x + min(0, dx) + min(0, nx) + 1])

    r0, c0 = (int(v[0]) for v in np.nonzero(component))  # first row, then first column
    x, y, dx, dy = c0, r0, 1, 0  # along the top edge of the first pixel, inside on the right
    vertices = [(x, y)]
    while True:
        x, y = x + dx, y + dy
        if filled(x, y, dx, dy, dy, -dx):  # pixel ahead-left: turn left
            ndx, ndy = dy, -dx
        elif filled(x, y, dx, dy, -dy, dx):  # pixel ahead-right: go straight
            ndx, ndy = dx, dy
        else:  # turn right
            ndx, ndy = -dy, dx
        if (x, y) == (c0, r0) and (ndx, ndy) == (1, 0):
            break
        if (ndx, ndy) != (dx, dy):
            vertices.append((x, y))
        dx, dy = ndx, ndy
    vertices.append((c0, r0))
    return np.asarray(vertices, np.float32)
