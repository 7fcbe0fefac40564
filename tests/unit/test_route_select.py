"""Input checks against a model's InputSpec, and choosing the best series of a study."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_ai_node.domain import BodyPart, InputSpec, SeriesInfo
from dicom_ai_node.route.bodypart import BodyPartDecision
from dicom_ai_node.route.select import check_input, select_series

CT = "1.2.840.10008.5.1.4.1.1.2"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
CHEST = BodyPart.CHEST

SPEC = InputSpec(
    modalities=frozenset({"CT"}),
    body_parts=frozenset({CHEST}),
    sop_class_uids=frozenset({CT}),
    min_slices=50,
    max_slices=2000,
    slice_thickness_mm=(0.5, 5.0),
    require_axial=True,
    require_original=True,
    require_pixel_spacing=True,
)


def series(uid: str, number: int = 2, **kwargs: Any) -> SeriesInfo:
    base: dict[str, Any] = dict(
        study_instance_uid="1.2.3",
        series_instance_uid=uid,
        modality="CT",
        sop_class_uids=frozenset({CT}),
        number_of_instances=200,
        series_description=f"series {uid}",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        slice_thickness=2.5,
        pixel_spacing=(0.7, 0.7),
        image_orientation_patient=AXIAL,
        header={"SeriesNumber": number},
    )
    base.update(kwargs)
    return SeriesInfo(**base)


def test_good_series_passes() -> None:
    assert check_input(series("1"), SPEC, CHEST) == []


@pytest.mark.parametrize(
    ("changes", "body_part", "expected"),
    [
        ({"modality": "MR"}, CHEST, "modality MR is not CT"),
        ({}, BodyPart.HEAD, "body part HEAD is not CHEST"),
        ({"sop_class_uids": frozenset({"1.2.840.10008.5.1.4.1.1.7"})}, CHEST, "Secondary"),
        ({"sop_class_uids": frozenset()}, CHEST, "SOP Class UID is unknown"),
        ({"number_of_instances": 3}, CHEST, "3 slices, fewer than the minimum 50"),
        ({"number_of_instances": 3000}, CHEST, "more than the maximum 2000"),
        ({"slice_thickness": 10.0}, CHEST, "SliceThickness 10 mm is outside 0.5-5 mm"),
        ({"slice_thickness": None}, CHEST, "SliceThickness is absent"),
        ({"image_orientation_patient": CORONAL}, CHEST, "not axial"),
        ({"image_orientation_patient": None}, CHEST, "cannot be confirmed"),
        ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, CHEST, "LOCALIZER"),
        ({"image_type": ("DERIVED", "SECONDARY", "MPR")}, CHEST, "not ORIGINAL"),
        ({"image_type": ()}, CHEST, "ImageType is absent, not ORIGINAL"),
        ({"pixel_spacing": None}, CHEST, "PixelSpacing is absent"),
    ],
)
def test_each_reason(changes: dict[str, Any], body_part: BodyPart, expected: str) -> None:
    reasons = check_input(series("1", **changes), SPEC, body_part)
    assert len(reasons) == 1, reasons
    assert expected in reasons[0]


def test_unconstrained_spec_accepts_anything() -> None:
    odd = series("1", modality="SR", image_type=(), image_orientation_patient=None)
    assert check_input(odd, InputSpec(), BodyPart.UNKNOWN) == []


def test_multi_frame_counts_frames() -> None:
    enhanced = series("1", number_of_instances=1, number_of_frames=300)
    assert check_input(enhanced, InputSpec(min_slices=50), CHEST) == []


def test_combined_region_decision_is_accepted() -> None:
    decision = BodyPartDecision(
        BodyPart.ABDOMEN, "SeriesDescription", "", frozenset({BodyPart.ABDOMEN, CHEST})
    )
    assert check_input(series("1"), SPEC, decision) == []


def test_thin_beats_thick() -> None:
    thin, thick = series("1.1", 3, slice_thickness=1.0), series("1.2", 2, slice_thickness=5.0)
    selection = select_series([(thick, CHEST), (thin, CHEST)], SPEC)
    assert selection.chosen == thin
    assert "thinner slices (1 mm vs 5 mm)" in selection.explanation[1]
    assert selection.rejected == {"1.2": ("a better series was chosen: 1.1: thinner slices "
                                          "(1 mm vs 5 mm)",)}  # fmt: skip


def test_scout_localizer_non_axial_and_derived_are_rejected() -> None:
    good = series("1.9", 5)
    scout = series("1.1", 1, number_of_instances=2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    coronal = series("1.2", 3, image_orientation_patient=CORONAL)
    derived = series("1.3", 4, image_type=("DERIVED", "SECONDARY", "MPR"), slice_thickness=1.0)
    selection = select_series([(s, CHEST) for s in (scout, coronal, derived, good)], SPEC)
    assert selection.chosen == good
    assert set(selection.rejected) == {"1.1", "1.2", "1.3"}
    assert any("LOCALIZER" in r for r in selection.rejected["1.1"])
    assert any("fewer than the minimum" in r for r in selection.rejected["1.1"])
    assert "slices are not axial (ImageOrientationPatient)" in selection.rejected["1.2"]
    assert "ImageType is DERIVED\\SECONDARY\\MPR, not ORIGINAL" in selection.rejected["1.3"]
    assert "3 other series do not meet the input spec" in selection.explanation


def test_original_and_axial_preferred_even_when_not_required() -> None:
    loose = InputSpec(modalities=frozenset({"CT"}))
    mpr = series("1.1", 1, image_type=("DERIVED", "SECONDARY"), slice_thickness=0.5)
    original = series("1.2", 2, slice_thickness=3.0)
    selection = select_series([(mpr, CHEST), (original, CHEST)], loose)
    assert selection.chosen == original
    assert "it is ORIGINAL" in selection.explanation[1]
    coronal = series("1.3", 1, image_orientation_patient=CORONAL, slice_thickness=0.5)
    selection = select_series([(coronal, CHEST), (original, CHEST)], loose)
    assert selection.chosen == original
    assert "axial" in selection.explanation[1]


def test_more_slices_then_lower_series_number_then_uid() -> None:
    short, long = series("1.1", 1, number_of_instances=100), series("1.2", 2)
    assert select_series([(short, CHEST), (long, CHEST)], SPEC).chosen == long
    first, second = series("1.9", 2), series("1.1", 7)
    selection = select_series([(second, CHEST), (first, CHEST)], SPEC)
    assert selection.chosen == first
    assert "lower SeriesNumber (2 vs 7)" in selection.explanation[1]
    a, b = series("1.5", 2), series("1.4", 2)
    selection = select_series([(a, CHEST), (b, CHEST)], SPEC)
    assert selection.chosen == b
    assert "tie broken by Series Instance UID" in selection.explanation[1]


def test_choice_does_not_depend_on_input_order() -> None:
    items = [(series(f"1.{i}", i, slice_thickness=t), CHEST) for i, t in enumerate([2, 1, 1, 3])]
    chosen = [select_series(order, SPEC).chosen for order in (items, items[::-1])]
    assert chosen[0] is not None and chosen[1] is not None
    assert chosen[0].series_instance_uid == chosen[1].series_instance_uid == "1.1"


def test_nothing_acceptable() -> None:
    selection = select_series([(series("1", modality="MR"), CHEST)], SPEC)
    assert selection.chosen is None
    assert selection.explanation == ("no series meets the model's input",)
    assert select_series([], SPEC).explanation == ("no candidate series",)
