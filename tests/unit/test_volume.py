"""Infer: volumes are sorted in patient space and bad input is reported, not crashed on."""

from __future__ import annotations

import random

import numpy as np

from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.series import make_ct_series


def test_sorted_by_position_whatever_the_arrival_order() -> None:
    phantom, datasets = make_ct_series(12, 32, 32, spacing_mm=(2.0, 1.0, 1.0), seed=3)
    shuffled = datasets[:]
    random.Random(0).shuffle(shuffled)
    volume, ordered, issues = load_volume(shuffled)
    assert volume is not None and issues == ()
    assert [d.InstanceNumber for d in ordered] == list(range(1, 13))
    assert volume.spacing_mm == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.voxels, phantom.hu.astype(np.float32))


def test_missing_slice_is_a_blocking_issue() -> None:
    _, datasets = make_ct_series(12, 16, 16, seed=4)
    del datasets[5]
    _, _, issues = load_volume(datasets)
    assert [i.check for i in issues] == ["spacing"] and issues[0].blocking
    assert "missing slices" in issues[0].message


def test_missing_pixel_spacing_and_mixed_orientation() -> None:
    _, datasets = make_ct_series(6, 16, 16, seed=5)
    for ds in datasets:
        del ds.PixelSpacing
    datasets[2].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    _, _, issues = load_volume(datasets)
    checks = {i.check for i in issues}
    assert {"pixel-spacing", "orientation"} <= checks


def test_mixed_image_sizes_give_no_volume() -> None:
    _, a = make_ct_series(3, 16, 16, seed=6)
    _, b = make_ct_series(3, 32, 32, seed=6)
    volume, _, issues = load_volume(a + b[:1])
    assert volume is None and any(i.check == "size" for i in issues)


def test_flipped_axial_images_are_reported() -> None:
    _, datasets = make_ct_series(6, 16, 16, seed=7)
    for ds in datasets:
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    _, _, issues = load_volume(datasets)
    assert any("standard in-plane orientation" in i.message for i in issues)


def test_a_series_over_the_pixel_budget_is_refused_before_decoding() -> None:
    _, datasets = make_ct_series(4, 16, 16, seed=6)
    assert load_volume(datasets, max_voxels=4 * 16 * 16)[0] is not None  # exactly at the budget
    volume, _, issues = load_volume(datasets, max_voxels=4 * 16 * 16 - 1)
    assert volume is None and [i.check for i in issues] == ["size"] and issues[0].blocking


def test_a_header_claiming_huge_frames_costs_nothing() -> None:
    """A decompression-bomb-like header: 60000 x 60000 x 1000 frames, 8 bytes of data."""
    _, [ds] = make_ct_series(1, 4, 4, seed=7)
    ds.Rows = ds.Columns = 60000
    ds.NumberOfFrames = 1000
    ds.PixelData = bytes(8)
    volume, _, issues = load_volume([ds])
    assert volume is None
    assert any(i.check == "size" and "3600000000000 pixels" in i.message for i in issues)
