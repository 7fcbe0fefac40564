"""Encode: the GSPS draws each label's outlines and measurements on the source images
(PS3.3 A.33.1), on a CT series, an MR series and one radiograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.encode import result_series_number, to_bytes, validate_roundtrip
from dicom_ai_node.encode.common import EncodeContext
from dicom_ai_node.encode.gsps import (
    MAX_POINTS,
    build_gsps,
    layer_name,
    simplify_closed,
    source_window,
)
from dicom_ai_node.encode.keyimages import measurement_line
from dicom_ai_node.encode.sr import outer_contour
from dicom_ai_node.errors import EncodeError

from ..tools import dciodvfy_errors
from .encode_cases import ALGORITHM, WHEN, Case, phantom_cases

GSPS_UID = "1.2.840.10008.5.1.4.1.1.11.1"


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return phantom_cases(
        ct=(24, 96, (5.0, 3.5, 3.5)), mr=(10, 96), radiograph_size=256, voxels_per_ml=100
    )


def context(source: list[Dataset], key: str = "job-1", **kwargs: object) -> EncodeContext:
    return EncodeContext(source, ALGORITHM, key, 9001, WHEN, **kwargs)  # type: ignore[arg-type]


def build(c: Case, key: str = "job-1") -> Dataset:
    (gsps,) = build_gsps(context(c.source, key), c.output)
    return validate_roundtrip(gsps)


@pytest.mark.interop
@pytest.mark.parametrize("name", ["CT", "MR", "CR"])
def test_gsps_passes_dciodvfy(cases: dict[str, Case], name: str, tmp_path: Path) -> None:
    path = tmp_path / "gsps.dcm"
    path.write_bytes(to_bytes(build(cases[name])))
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("name", ["CT", "MR", "CR"])
def test_gsps_references_exactly_the_source(cases: dict[str, Case], name: str) -> None:
    c = cases[name]
    gsps = build(c)
    src = c.source[0]
    assert gsps.SOPClassUID == GSPS_UID and gsps.Modality == "PR"
    assert (gsps.StudyInstanceUID, gsps.PatientID, gsps.PatientName) == (
        src.StudyInstanceUID,
        src.PatientID,
        src.PatientName,
    )
    assert gsps.SeriesInstanceUID != src.SeriesInstanceUID
    (series,) = gsps.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == src.SeriesInstanceUID
    referenced = [item.ReferencedSOPInstanceUID for item in series.ReferencedImageSequence]
    assert sorted(referenced) == sorted(ds.SOPInstanceUID for ds in c.source)
    assert "PixelData" not in gsps


def annotated(gsps: Dataset, c: Case) -> dict[tuple[str, int], list[Dataset]]:
    """(layer, slice index) -> graphic objects."""
    index = {ds.SOPInstanceUID: k for k, ds in enumerate(c.source)}
    found: dict[tuple[str, int], list[Dataset]] = {}
    for item in gsps.GraphicAnnotationSequence:
        objects = list(item.get("GraphicObjectSequence", []))
        if not objects:
            continue
        (image,) = item.ReferencedImageSequence
        found.setdefault((item.GraphicLayer, index[image.ReferencedSOPInstanceUID]), []).extend(
            objects
        )
    return found


def on_boundary(mask: npt.NDArray[np.bool_], x: float, y: float) -> bool:
    """Whether the pixel corner (x, y) touches a pixel inside and one outside the mask."""
    assert x == int(x) and y == int(y), "vertices are pixel corners"
    padded = np.pad(mask, 1)
    around = padded[int(y) : int(y) + 2, int(x) : int(x) + 2]  # pixels (y-1..y, x-1..x)
    return bool(around.any() and not around.all())


@pytest.mark.parametrize("name", ["CT", "MR", "CR"])
def test_outlines_lie_on_each_labels_boundary_on_each_slice(
    cases: dict[str, Case], name: str
) -> None:
    c = cases[name]
    assert c.output.label_map is not None
    found = annotated(build(c), c)
    expected = {
        (layer_name(x), k)
        for x in c.output.labels
        for k in range(len(c.source))
        if (c.output.label_map[k] == x.value).any()
    }
    assert set(found) == expected
    layers = {layer_name(x): x.value for x in c.output.labels}
    for (layer, k), objects in found.items():
        mask = c.output.label_map[k] == layers[layer]
        for obj in objects:
            assert (obj.GraphicType, obj.GraphicAnnotationUnits) == ("POLYLINE", "PIXEL")
            points = np.asarray(obj.GraphicData, float).reshape(-1, 2)
            assert len(points) == obj.NumberOfGraphicPoints <= MAX_POINTS
            assert np.array_equal(points[0], points[-1]), "closed"
            assert all(on_boundary(mask, x, y) for x, y in points), (layer, k)


def test_layers_are_named_and_coloured_per_label(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    gsps = build(c)
    layers = {item.GraphicLayer: item for item in gsps.GraphicLayerSequence}
    assert set(layers) == {"L1_RIGHT_LUNG", "L2_LEFT_LUNG", "AI_CAPTION"}
    assert layers["L1_RIGHT_LUNG"].GraphicLayerDescription == "Right lung"
    assert "GraphicLayerRecommendedDisplayCIELabValue" in layers["L2_LEFT_LUNG"]
    assert gsps.ContentLabel == "AI_CT_CHEST_LUNG"
    assert "ct-chest-lungs" in gsps.ContentDescription


def test_measurements_are_text_on_the_key_slice(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    assert c.output.label_map is not None
    gsps = build(c)
    index = {ds.SOPInstanceUID: k for k, ds in enumerate(c.source)}
    texts: dict[str, list[tuple[int, str]]] = {}
    for item in gsps.GraphicAnnotationSequence:
        for text in item.get("TextObjectSequence", []):
            ks = [index[i.ReferencedSOPInstanceUID] for i in item.ReferencedImageSequence]
            texts.setdefault(item.GraphicLayer, []).extend(
                (k, text.UnformattedTextValue) for k in ks
            )
    for m, x in zip(c.output.measurements, c.output.labels, strict=True):
        key = int(np.argmax((c.output.label_map == x.value).sum(axis=(1, 2))))
        ((k, text),) = texts[layer_name(x)]
        assert k == key and measurement_line(m) in text and x.name in text
    caption = texts["AI_CAPTION"]
    assert sorted(k for k, _ in caption) == list(range(len(c.source)))
    assert all("NOT FOR DIAGNOSIS" in t and "ct-chest-lungs 1.0.0" in t for _, t in caption)


def test_window_and_polarity_follow_the_source(cases: dict[str, Case]) -> None:
    ct = build(cases["CT"])
    (voi,) = ct.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (-600.0, 1500.0)
    assert ct.PresentationLUTShape == "IDENTITY"
    assert build(cases["CR"]).PresentationLUTShape == "INVERSE"  # MONOCHROME1
    mr = cases["MR"].source[0]
    assert "WindowCenter" not in mr
    assert source_window(mr) == (32768.0, 65536.0)  # unsigned 16 bits: all of them
    mr.SmallestImagePixelValue, mr.LargestImagePixelValue = 0, 999
    try:
        assert source_window(mr) == (500.0, 1000.0)
    finally:
        del mr.SmallestImagePixelValue, mr.LargestImagePixelValue


def test_same_job_gives_identical_bytes_and_another_job_other_uids(
    cases: dict[str, Case],
) -> None:
    c = cases["CT"]
    first = build(c)
    assert to_bytes(first) == to_bytes(build(c))
    other = build(c, "job-2")
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    assert first.PresentationCreationDate == "20260102"


def test_series_number_description_and_equipment(cases: dict[str, Case]) -> None:
    c = cases["CT"]
    first = build(c)
    assert (first.SeriesNumber, first.SeriesDescription) == (9006, "AI ct-chest-lungs 1.0.0 GSPS")
    assert (first.Manufacturer, first.ManufacturerModelName, first.SoftwareVersions) == (
        "dicom-ai-node",
        "ct-chest-lungs",
        "1.0.0",
    )
    assert first.DeviceUID == ALGORITHM.device_uid
    models = [x.get("ManufacturerModelName") for x in first.ContributingEquipmentSequence]
    assert "ct-chest-lungs" in models
    # the caller numbers a revision's series (encode.result_series_number)
    ctx = EncodeContext(
        c.source, ALGORITHM, "job-r2", result_series_number(9001, 2), WHEN, 2, (first,)
    )
    (revised,) = build_gsps(ctx, c.output)
    assert (revised.SeriesNumber, revised.SeriesDescription) == (
        9026,
        "AI ct-chest-lungs 1.0.0 GSPS revised 2",
    )
    assert revised.SOPInstanceUID != first.SOPInstanceUID


def test_nothing_to_draw_gives_no_gsps(cases: dict[str, Case]) -> None:
    c = cases["CR"]
    assert c.output.label_map is not None
    empty = ModelOutput(labels=c.output.labels, label_map=np.zeros_like(c.output.label_map))
    assert build_gsps(context(c.source), empty) == []
    wrong = ModelOutput(labels=c.output.labels, label_map=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(EncodeError):
        build_gsps(context(c.source), wrong)


def test_measurements_without_voxels_go_into_the_caption(cases: dict[str, Case]) -> None:
    c = cases["CR"]
    assert c.output.label_map is not None
    output = ModelOutput(
        labels=c.output.labels,
        label_map=np.zeros_like(c.output.label_map),
        measurements=c.output.measurements,
    )
    (gsps,) = build_gsps(context(c.source), output)
    (item,) = gsps.GraphicAnnotationSequence
    assert item.GraphicLayer == "AI_CAPTION"
    assert (
        measurement_line(c.output.measurements[0])
        in item.TextObjectSequence[0].UnformattedTextValue
    )


def test_simplify_bounds_points_and_keeps_own_vertices() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    radius = 200 + 12 * np.sin(np.arctan2(yy - 256, xx - 256) * 37)
    blob = np.hypot(yy - 256, xx - 256) < radius + rng.uniform(0, 3, (512, 512))
    contour = outer_contour(blob)
    assert len(contour) > 4 * MAX_POINTS
    simple = simplify_closed(contour)
    assert 4 <= len(simple) <= MAX_POINTS
    assert np.array_equal(simple[0], simple[-1])
    own = {tuple(p) for p in contour.tolist()}
    assert all(tuple(p) in own for p in simple.tolist())
    pixel = outer_contour(np.ones((1, 1), bool))
    assert len(simplify_closed(pixel)) == 5  # a single pixel keeps its four corners
