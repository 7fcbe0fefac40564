"""Route: check a series against a model's declared input, and pick a study's best series.

A study often holds several reconstructions of one acquisition (thin and thick slices,
lung and soft-tissue kernels, MPRs) plus localizers. A model runs once per study on the
series that suits it best; the ranking and its reasons are spelled out so that "why this
series?" always has an answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID

from ..domain import BodyPart, InputSpec, SeriesInfo
from .bodypart import BodyPartDecision

__all__ = ["Selection", "check_input", "select_series"]


def _regions(body_part: BodyPart | BodyPartDecision) -> frozenset[BodyPart]:
    if isinstance(body_part, BodyPartDecision):
        return body_part.regions
    return frozenset({BodyPart(body_part)})


def _sop_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return f"{uid} ({name})" if name and name != uid else uid


def check_input(
    info: SeriesInfo, spec: InputSpec, body_part: BodyPart | BodyPartDecision
) -> list[str]:
    """Say why ``info`` does not meet a model's declared input; empty when it does.

    Checks, each only when ``spec`` asks for it: modality, body region (any region of a
    combined decision counts), SOP Class, slice count, SliceThickness range, axial slices
    (ImageOrientationPatient, PS3.3 C.7.6.2.1.1; a LOCALIZER ImageType, PS3.3 C.8.2.1.1.1,
    is never a cross-section), ORIGINAL ImageType (PS3.3 C.7.6.1.1.2) and PixelSpacing.

    Parameters
    ----------
    info:
        The series.
    spec:
        The model's input specification.
    body_part:
        The normalised body region, or the full decision.

    Returns
    -------
    list[str]
        Human-readable reasons, in the order above.
    """
    reasons: list[str] = []
    if spec.modalities and info.modality.upper() not in {m.upper() for m in spec.modalities}:
        wanted = ", ".join(sorted(spec.modalities))
        reasons.append(f"modality {info.modality or '(none)'} is not {wanted}")
    regions = _regions(body_part)
    if spec.body_parts and not regions & spec.body_parts:
        wanted = ", ".join(sorted(p.value for p in spec.body_parts))
        shown = "+".join(sorted(p.value for p in regions))
        reasons.append(f"body part {shown} is not {wanted}")
    reasons.extend(_sop_reasons(info, spec))
    reasons.extend(_geometry_reasons(info, spec))
    if spec.require_original:
        value1 = info.image_type[0] if info.image_type else ""
        if value1 != "ORIGINAL":
            shown = "\\".join(info.image_type) or "absent"
            reasons.append(f"ImageType is {shown}, not ORIGINAL")
    if spec.require_pixel_spacing and info.pixel_spacing is None:
        reasons.append("PixelSpacing is absent")
    return reasons


def _sop_reasons(info: SeriesInfo, spec: InputSpec) -> list[str]:
    if not spec.sop_class_uids:
        return []
    if not info.sop_class_uids:
        return ["SOP Class UID is unknown"]
    other = sorted(info.sop_class_uids - spec.sop_class_uids)
    if not other:
        return []
    return ["SOP Class " + ", ".join(_sop_name(u) for u in other) + " is not accepted"]


def _geometry_reasons(info: SeriesInfo, spec: InputSpec) -> list[str]:
    reasons = []
    slices = info.number_of_slices
    if spec.min_slices is not None and slices < spec.min_slices:
        reasons.append(f"{slices} slices, fewer than the minimum {spec.min_slices}")
    if spec.max_slices is not None and slices > spec.max_slices:
        reasons.append(f"{slices} slices, more than the maximum {spec.max_slices}")
    if spec.slice_thickness_mm is not None:
        low, high = spec.slice_thickness_mm
        if info.slice_thickness is None:
            reasons.append("SliceThickness is absent")
        elif not low <= info.slice_thickness <= high:
            reasons.append(
                f"SliceThickness {info.slice_thickness:g} mm is outside {low:g}-{high:g} mm"
            )
    if spec.require_axial:
        if "LOCALIZER" in info.image_type:
            reasons.append("ImageType says LOCALIZER (a projection, not cross-sections)")
        elif info.is_axial is None:
            reasons.append("ImageOrientationPatient is absent, so axial slices cannot be confirmed")
        elif not info.is_axial:
            reasons.append("slices are not axial (ImageOrientationPatient)")
    return reasons


@dataclass(frozen=True)
class Selection:
    """The series chosen for one model in one study, and why the others were not.

    Attributes
    ----------
    chosen:
        The winner, or ``None`` when no candidate meets the input spec.
    explanation:
        Why the winner won (or why nothing was chosen).
    rejected:
        Series Instance UID -> reasons, for every candidate that was not chosen.
    """

    chosen: SeriesInfo | None
    explanation: tuple[str, ...]
    rejected: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _thickness(info: SeriesInfo) -> float:
    return info.slice_thickness if info.slice_thickness is not None else math.inf


def _series_number(info: SeriesInfo) -> float:
    value = info.header.get("SeriesNumber")
    try:
        return float(value) if value not in (None, "") else math.inf
    except (TypeError, ValueError):
        return math.inf


def _rank(info: SeriesInfo) -> tuple[int, int, float, int, float, str]:
    """Sort key, best first: ORIGINAL, axial, thinner, more slices, lower number, UID."""
    original = 0 if info.image_type[:1] == ("ORIGINAL",) else 1
    axial = 0 if info.is_axial else 1
    return (
        original,
        axial,
        _thickness(info),
        -info.number_of_slices,
        _series_number(info),
        info.series_instance_uid,
    )


def _label(info: SeriesInfo) -> str:
    number = _series_number(info)
    text = info.series_instance_uid
    if number != math.inf:
        text += f" (#{number:g}"
        text += f" {info.series_description!r})" if info.series_description else ")"
    elif info.series_description:
        text += f" ({info.series_description!r})"
    return text


def _why_better(winner: SeriesInfo, other: SeriesInfo) -> str:
    """Name the first ranking criterion on which ``winner`` beats ``other``."""
    a, b = _rank(winner), _rank(other)
    if a[0] != b[0]:
        return "it is ORIGINAL, the other is not"
    if a[1] != b[1]:
        return "its slices are axial, the other's are not"
    if a[2] != b[2]:
        shown = "unknown" if b[2] == math.inf else f"{b[2]:g} mm"
        return f"thinner slices ({a[2]:g} mm vs {shown})"
    if a[3] != b[3]:
        return f"more slices ({-a[3]} vs {-b[3]})"
    if a[4] != b[4]:
        shown = "none" if b[4] == math.inf else f"{b[4]:g}"
        return f"lower SeriesNumber ({a[4]:g} vs {shown})"
    return "tie broken by Series Instance UID"


def _profile(info: SeriesInfo) -> str:
    parts = [
        "ORIGINAL" if info.image_type[:1] == ("ORIGINAL",) else "not ORIGINAL",
        "axial" if info.is_axial else "not axial",
    ]
    if info.slice_thickness is not None:
        parts.append(f"{info.slice_thickness:g} mm slices")
    parts.append(f"{info.number_of_slices} slices")
    return ", ".join(parts)


def select_series(
    candidates: Sequence[tuple[SeriesInfo, BodyPart | BodyPartDecision]], spec: InputSpec
) -> Selection:
    """Pick the best series of a study for one model.

    Candidates failing :func:`check_input` are rejected with its reasons. Among the rest
    the ranking prefers, in order: ORIGINAL ImageType, axial slices, thinner slices, more
    slices, lower SeriesNumber, and finally the lower Series Instance UID so the choice
    is deterministic.

    Parameters
    ----------
    candidates:
        Series of one study with their body regions.
    spec:
        The model's input specification.

    Returns
    -------
    Selection
        The chosen series, why it won, and why each other candidate was not chosen.
    """
    rejected: dict[str, tuple[str, ...]] = {}
    acceptable: list[SeriesInfo] = []
    for info, body_part in candidates:
        reasons = check_input(info, spec, body_part)
        if reasons:
            rejected[info.series_instance_uid] = tuple(reasons)
        else:
            acceptable.append(info)
    if not acceptable:
        why = "no series meets the model's input" if candidates else "no candidate series"
        return Selection(None, (why,), rejected)
    ordered = sorted(acceptable, key=_rank)
    winner = ordered[0]
    lines = [f"chosen {_label(winner)}: {_profile(winner)}"]
    for other in ordered[1:]:
        why = _why_better(winner, other)
        lines.append(f"preferred over {_label(other)}: {why}")
        rejected[other.series_instance_uid] = (
            f"a better series was chosen: {winner.series_instance_uid}: {why}",
        )
    if rejected and len(ordered) == 1:
        lines.append(f"{len(rejected)} other series do not meet the input spec")
    return Selection(winner, tuple(lines), rejected)
