"""Encode: Secondary Capture key images of a CT volume, an MR series and a radiograph:
valid (dciodvfy), the source's pixels with only the outlines and text changed, pointing at
their source image, deterministic, and in a series of their own per revision."""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.encode import encode_results, to_bytes
from dicom_ai_node.encode.keyimages import KeySlice, burned_in, key_slices
from dicom_ai_node.encode.sc import build_key_images
from dicom_ai_node.errors import EncodeError
from dicom_ai_node.testing.series import make_ct_series

from ..tools import dciodvfy_errors
from .encode_cases import CASES, LABELS, Case, cr_case, ct_case
from .encode_cases import LATER as WHEN

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]()


@pytest.fixture(scope="module")
def ct() -> Case:
    return ct_case()


def windowed(ds: Dataset) -> npt.NDArray[np.uint8]:
    """The source as a display shows it, computed here from the header alone
    (PS3.3 C.11.1 rescale, C.11.2.1.2.1 linear window; MONOCHROME1 inverted)."""
    values = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    if "WindowCenter" in ds:
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        scaled = (values - (c - 0.5)) / (w - 1) + 0.5
    else:
        low, high = np.percentile(values, [1, 99])
        scaled = (values - low) / max(high - low, 1e-6)
    gray = np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        gray = 255 - gray
    return np.repeat(gray[:, :, None], 3, axis=2)


def near(mask: npt.NDArray[np.bool_], steps: int) -> npt.NDArray[np.bool_]:
    """``mask`` grown by ``steps`` pixels (8-neighbour)."""
    out = mask.copy()
    for _ in range(steps):
        p = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                out |= p[dy : dy + out.shape[0], dx : dx + out.shape[1]]
    return out


def boundary(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    p = np.pad(mask, 1)
    inner = mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def read_back(ds: Dataset) -> Dataset:
    return pydicom.dcmread(BytesIO(to_bytes(ds)))


# --- which images are key ----------------------------------------------------------------


def test_each_label_gets_the_slice_where_its_area_is_largest(ct: Case) -> None:
    keys = key_slices(ct.output, ct.source)
    assert ct.output.label_map is not None
    areas = {v: (ct.output.label_map == v).sum(axis=(1, 2)) for v in (1, 2)}
    assert sorted(v for key in keys for v in key.label_values) == [1, 2]
    for key in keys:
        for value in key.label_values:
            assert key.index == int(np.argmax(areas[value]))
    assert [k.index for k in keys] == sorted(k.index for k in keys)


def test_labels_peaking_on_one_slice_share_a_key_image() -> None:
    source = make_ct_series(6, 32, 32, spacing_mm=(5.0, 2.0, 2.0))[1]
    label_map = np.zeros((6, 32, 32), np.uint8)
    label_map[3, 2:10, 2:10] = 1
    label_map[3, 20:30, 20:30] = 2
    label_map[1, 20:22, 20:22] = 2
    output = ModelOutput(LABELS, label_map)
    assert key_slices(output, source) == [KeySlice(3, (1, 2))]
    assert key_slices(replace(output, label_map=np.zeros_like(label_map)), source) == []


def test_a_radiograph_is_its_own_key_image() -> None:
    case = cr_case()
    assert key_slices(case.output, case.source) == [KeySlice(0, (1,))]
    empty = replace(case.output, label_map=np.zeros_like(case.output.label_map))
    assert key_slices(empty, case.source) == [KeySlice(0, (1,))]  # described by its measurement
    assert key_slices(replace(case.output, label_map=None), case.source) == [KeySlice(0, (1,))]


# --- the objects ------------------------------------------------------------------------


@pytest.mark.interop
def test_key_images_pass_dciodvfy(case: Case, tmp_path: Path) -> None:
    images = build_key_images(case.context(), case.output, case.pixels)
    assert images
    for n, ds in enumerate(images):
        path = tmp_path / f"sc{n}.dcm"
        path.write_bytes(to_bytes(ds))
        assert dciodvfy_errors(path) == [], f"key image {n}"


@pytest.mark.interop
def test_a_source_without_orientation_gives_a_valid_key_image(tmp_path: Path) -> None:
    case = cr_case()
    source = case.source[0].copy()
    del source.PatientOrientation, source.BodyPartExamined
    bare = replace(case, source=[source])
    (ds,) = build_key_images(bare.context(), bare.output, bare.pixels)
    assert ds.PatientOrientation == [] and ds.Laterality == ""  # Type 2C, unknown
    path = tmp_path / "sc.dcm"
    path.write_bytes(to_bytes(ds))
    assert dciodvfy_errors(path) == []


def test_key_image_pixels_are_the_windowed_source_but_outline_and_text(case: Case) -> None:
    assert case.output.label_map is not None
    for key, ds in zip(
        key_slices(case.output, case.source),
        build_key_images(case.context(), case.output, case.pixels),
        strict=True,
    ):
        source = case.source[key.index]
        picture = read_back(ds).pixel_array
        expected = windowed(source)
        assert picture.shape == expected.shape == (source.Rows, source.Columns, 3)
        changed = np.any(picture != expected, axis=2)
        outline = np.zeros_like(changed)
        for value in key.label_values:
            outline |= boundary(case.output.label_map[key.index] == value)
        rows = source.Rows
        text_bands = np.zeros_like(changed)
        text_bands[: rows // 4] = True  # legend at the top (a label and its measurement)
        text_bands[rows - rows // 5 :] = True  # caption at the bottom
        stray = changed & ~near(outline, 3) & ~text_bands
        assert not stray.any(), f"{int(stray.sum())} pixels changed away from outline and text"
        assert changed[: rows // 4].any() and changed[rows - rows // 5 :].any()  # text is there
        label = case.output.labels[key.label_values[0] - 1]
        mask = case.output.label_map[key.index] == label.value
        on_edge = boundary(mask) & ~text_bands
        colored = np.all(picture == np.asarray(label.color_rgb, np.uint8), axis=2)
        assert on_edge.any() and colored[on_edge].mean() > 0.95
        assert not colored[~near(mask, 1) & ~text_bands].any()  # drawn on the label only


def test_key_images_describe_and_reference_their_source(case: Case) -> None:
    keys = key_slices(case.output, case.source)
    images = build_key_images(case.context(), case.output, case.pixels)
    assert len(images) == len(keys) >= 1
    first = case.source[0]
    for n, (key, ds) in enumerate(zip(keys, images, strict=True), start=1):
        source = case.source[key.index]
        (item,) = ds.SourceImageSequence
        assert item.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert item.ReferencedSOPClassUID == source.SOPClassUID
        assert "ReferencedFrameNumber" not in item
        assert ds.SOPClassUID == SC_CLASS and ds.InstanceNumber == n
        assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (source.Rows, source.Columns, 3)
        assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "YES"
        assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"]
        assert "not for diagnosis" in ds.DerivationDescription
        assert case.algorithm.name in ds.ImageComments
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
            assert ds[keyword].value == first[keyword].value, keyword
        assert ds.SeriesNumber == 9004
        assert ds.SeriesDescription == f"AI {case.algorithm.name} 1.2.0 SC"
        assert ds.ManufacturerModelName == case.algorithm.name
        assert ds.SoftwareVersions == "1.2.0"
        assert ds.DeviceUID == case.algorithm.device_uid
        models = [e.get("ManufacturerModelName") for e in ds.ContributingEquipmentSequence]
        assert case.algorithm.name in models
        assert str(ds.ContentDate) == str(ds.DateOfSecondaryCapture) == "20261208"
    assert len({ds.SeriesInstanceUID for ds in images}) == 1
    assert len({ds.SOPInstanceUID for ds in images}) == len(images)


def test_a_multi_frame_source_is_referenced_by_its_frame() -> None:
    case = cr_case()
    source = case.source[0].copy()
    frame = source.pixel_array
    source.NumberOfFrames = 2
    source.PixelData = np.stack([frame, frame]).astype("<u2").tobytes()
    multi = replace(case, source=[source])
    (ds,) = build_key_images(multi.context(), multi.output, multi.pixels)
    assert ds.SourceImageSequence[0].ReferencedFrameNumber == 1
    (single,) = build_key_images(case.context(), case.output, case.pixels)
    assert np.array_equal(read_back(ds).pixel_array, read_back(single).pixel_array)


def test_a_colour_source_keeps_its_colours() -> None:
    case = cr_case()
    source = case.source[0].copy()
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (source.Rows, source.Columns, 3), dtype=np.uint8)
    source.SamplesPerPixel, source.PhotometricInterpretation = 3, "RGB"
    source.PlanarConfiguration = 0
    source.BitsAllocated, source.BitsStored, source.HighBit = 8, 8, 7
    source.PixelData = rgb.tobytes()
    colour = replace(case, source=[source])
    picture = burned_in(colour.context(), colour.output, KeySlice(0, (1,)), colour.pixels)
    assert case.output.label_map is not None
    rows = source.Rows
    away = ~near(case.output.label_map[0] > 0, 4)
    away[: rows // 4] = away[rows - rows // 5 :] = False
    assert np.array_equal(picture[away], rgb[away])


def test_encoding_twice_gives_identical_bytes(ct: Case) -> None:
    first = [to_bytes(ds) for ds in build_key_images(ct.context(), ct.output, ct.pixels)]
    again = [to_bytes(ds) for ds in build_key_images(ct.context(), ct.output, ct.pixels)]
    assert first == again
    other = build_key_images(ct.context("job-2"), ct.output, ct.pixels)
    assert {ds.SOPInstanceUID for ds in other}.isdisjoint(
        pydicom.dcmread(BytesIO(b)).SOPInstanceUID for b in first
    )


def test_a_revision_has_its_own_series_and_says_so(ct: Case) -> None:
    first = build_key_images(ct.context("job-1"), ct.output, ct.pixels)
    [sr] = [
        ds
        for ds in encode_results(ct.source, ct.output, ct.algorithm, "job-1", content_datetime=WHEN)
        if ds.Modality == "SR"
    ]
    revised = build_key_images(
        ct.context("job-2", revision=2, predecessors=(sr,)), ct.output, ct.pixels
    )
    assert {ds.SeriesNumber for ds in revised} == {9024}
    assert {ds.SeriesDescription for ds in revised} == {"AI lungs 1.2.0 SC revised 2"}
    assert {ds.SeriesInstanceUID for ds in first}.isdisjoint(ds.SeriesInstanceUID for ds in revised)
    old, new = read_back(first[0]).pixel_array, read_back(revised[0]).pixel_array
    rows = int(first[0].Rows)
    differs = np.nonzero(np.any(old != new, axis=2))[0]
    assert differs.size and differs.min() >= rows - rows // 5  # only the caption changed


def test_outputs_that_do_not_fit_are_refused(ct: Case) -> None:
    assert ct.output.label_map is not None
    short = replace(ct.output, label_map=ct.output.label_map[:-1])
    with pytest.raises(EncodeError, match="shape"):
        build_key_images(ct.context(), short, ct.pixels)
    with pytest.raises(EncodeError, match="shape"):
        build_key_images(ct.context(), ct.output, lambda i: ct.pixels(i)[:-1])
    with pytest.raises(EncodeError, match="label values"):
        burned_in(ct.context(), ct.output, KeySlice(3, (7,)), ct.pixels)
