"""Web: the result preview drawn from a SEG and SR that the encode stage built from a
phantom's labels (CT volume and chest radiograph), read back from the PNG."""

from __future__ import annotations

import datetime as dt
import io
import random
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_ai_node.domain import AlgorithmInfo, Code, Measurement, ModelOutput, OutputLabel
from dicom_ai_node.encode import device_uid, encode_results, to_bytes
from dicom_ai_node.infer.findings.measure import AREA, ML, MM3_PER_ML, VOLUME
from dicom_ai_node.testing.images import radiograph_to_dataset
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph
from dicom_ai_node.testing.series import make_ct_series, write_series
from dicom_ai_node.web.preview import MAX_SOURCE_FILES, PreviewError, render_preview
from dicom_ai_node.web.preview_read import lab_to_rgb

ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
FINDING = Code("404684003", "SCT", "Clinical finding")
LUNGS = (  # as in models/ct-chest-lungs/model.toml
    OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), (220, 120, 80)),
    OutputLabel(2, "Left lung", ANATOMY, Code("44029006", "SCT", "Left lung"), (80, 150, 220)),
)
NODULE = OutputLabel(1, "Nodule", FINDING, Code("27925004", "SCT", "Nodule"), (255, 60, 60))
MM2 = Code("mm2", "UCUM", "square millimeter")
FAMILY = Code("123110", "DCM", "Artificial Intelligence")
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)
SIZE = 384
#: The first colour of the preview's palette: an SR region drawn without a SEG.
FIRST_REGION_COLOR = (255, 200, 0)
SEG_UID = "1.2.840.10008.5.1.4.1.1.66.4"


def algorithm(name: str) -> AlgorithmInfo:
    return AlgorithmInfo(
        name=name, version="1.0.0", family=FAMILY, device_uid=device_uid(name, "1.0.0")
    )


@dataclass(frozen=True)
class Result:
    """Source files, the result files and the label map the results were made from."""

    sources: list[Path]
    seg: Path
    sr: Path
    labels: npt.NDArray[np.uint8]
    extra: dict[str, Path]


def save(results: list[Dataset], folder: Path) -> dict[str, Path]:
    """Write the SEG, the measurement SR and the findings SR (when made) by kind."""
    out: dict[str, Path] = {}
    for ds in results:
        kind = "seg" if ds.SOPClassUID == SEG_UID else ("sr" if "sr" not in out else "findings")
        out[kind] = folder / f"{kind}.dcm"
        out[kind].write_bytes(to_bytes(ds))
    return out


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Result:
    folder = tmp_path_factory.mktemp("ct")
    phantom, datasets = make_ct_series(16, 96, 96, spacing_mm=(5.0, 3.7, 3.7))
    voxel_ml = float(np.prod(phantom.spacing_mm)) / MM3_PER_ML
    volumes = tuple(
        Measurement(
            label.value, VOLUME, float((phantom.labels == label.value).sum()) * voxel_ml, ML
        )
        for label in LUNGS
    )
    output = ModelOutput(labels=LUNGS, label_map=phantom.labels, measurements=volumes)
    results = encode_results(
        datasets, output, algorithm("ct-chest-lungs"), "job-ct", content_datetime=WHEN
    )
    files = save(results, folder)
    sources = write_series(datasets, folder / "source")
    return Result(sources, files["seg"], files["sr"], phantom.labels, files)


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory: pytest.TempPathFactory) -> Result:
    folder = tmp_path_factory.mktemp("cr")
    image = chest_radiograph(256, np.random.default_rng(3), "nodule")
    ds = radiograph_to_dataset(image, monochrome1=True)
    labels = image.mask[None].astype(np.uint8)
    area = Measurement(1, AREA, float(labels.sum()) * 0.35**2, MM2)
    output = ModelOutput(labels=(NODULE,), label_map=labels, measurements=(area,))
    files = save(
        encode_results([ds], output, algorithm("cxr-nodule"), "job-cr", content_datetime=WHEN),
        folder,
    )
    saliency = ModelOutput(
        labels=(NODULE,), saliency={1: np.where(image.mask, 0.9, 0.0).astype(np.float32)[None]}
    )
    fractional = encode_results(
        [ds], saliency, algorithm("cxr-abnormal"), "job-sal", content_datetime=WHEN
    )
    files["saliency"] = folder / "saliency.dcm"
    files["saliency"].write_bytes(to_bytes(fractional[0]))
    sources = write_series([ds], folder / "source")
    return Result(sources, files["seg"], files["sr"], labels, files)


def rgb(png: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        return np.asarray(image).copy()


def seg_colors(path: Path) -> list[tuple[int, int, int]]:
    return [
        lab_to_rgb(item.RecommendedDisplayCIELabValue) for item in dcmread(path).SegmentSequence
    ]


def painted(picture: npt.NDArray[np.uint8], color: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    hit: npt.NDArray[np.bool_] = np.all(picture == np.asarray(color, np.uint8), axis=-1)
    return hit


def back_to_source(hit: npt.NDArray[np.bool_], rows: int, columns: int) -> npt.NDArray[np.bool_]:
    """Source pixels under the centres of the picture's ``hit`` pixels."""
    height, width = hit.shape
    y, x = np.nonzero(hit)
    out = np.zeros((rows, columns), bool)
    out[((y + 0.5) * rows / height).astype(int), ((x + 0.5) * columns / width).astype(int)] = True
    return out


def boundary(mask: npt.NDArray[np.bool_], neighbours: int) -> npt.NDArray[np.bool_]:
    """Pixels of ``mask`` with a 4- or 8-neighbour outside it."""
    p = np.pad(mask, 1)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if neighbours == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    inner = mask.copy()
    for dy, dx in steps:
        inner &= p[1 + dy : p.shape[0] - 1 + dy, 1 + dx : p.shape[1] - 1 + dx]
    return mask & ~inner


def check_outline(picture: npt.NDArray[np.bool_], mask: npt.NDArray[np.bool_]) -> None:
    """The painted pixels lie on the mask's edge and go all the way round it."""
    source = back_to_source(picture, *mask.shape)
    assert source.any()
    assert not (source & ~boundary(mask, 8)).any(), "outline pixels off the mask's edge"
    assert not (boundary(mask, 4) & ~source).any(), "edge pixels without outline"


def test_cielab_colours_come_back_as_the_models_rgb() -> None:
    for color in [(220, 120, 80), (80, 150, 220), (255, 60, 60), (0, 0, 0), (255, 255, 255)]:
        back = lab_to_rgb(hd.color.CIELabColor.from_rgb(*color).value)
        assert max(abs(a - b) for a, b in zip(back, color, strict=True)) <= 1


def test_the_key_slice_shows_each_segment_outline_in_its_colour(ct: Result) -> None:
    png = render_preview(ct.sources, ct.seg, ct.sr, size=SIZE)
    image = rgb(png)
    assert image.shape[1] == SIZE and image.shape[0] > SIZE  # square CT: the legend below
    picture = image[:SIZE]
    key = int(np.argmax((ct.labels > 0).sum(axis=(1, 2))))
    for label, color in zip(LUNGS, seg_colors(ct.seg), strict=True):
        assert max(abs(a - b) for a, b in zip(color, label.color_rgb, strict=True)) <= 1
        check_outline(painted(picture, color), ct.labels[key] == label.value)
    band = image[SIZE:]
    assert (band != 0).any(axis=-1).sum() > 500, "the legend band is empty"
    for color in seg_colors(ct.seg):  # each segment's swatch
        assert painted(band, color).sum() >= 25


def test_the_key_slice_is_where_the_segments_are_largest(ct: Result, tmp_path: Path) -> None:
    datasets = [dcmread(p) for p in ct.sources]
    labels = np.zeros_like(ct.labels)
    labels[3, 10:20, 10:20] = 1  # 100 pixels of one segment here
    labels[9, 40:50, 40:48] = 1  # 80 + 80 of two segments here: the key slice
    labels[9, 60:70, 60:68] = 2
    output = ModelOutput(labels=LUNGS, label_map=labels)
    files = save(
        encode_results(datasets, output, algorithm("squares"), "job-sq", content_datetime=WHEN),
        tmp_path,
    )
    picture = rgb(render_preview(ct.sources, files["seg"], None, size=SIZE))[:SIZE]
    right, left = seg_colors(files["seg"])
    check_outline(painted(picture, right), labels[9] == 1)
    check_outline(painted(picture, left), labels[9] == 2)


def test_same_inputs_give_the_same_bytes_in_any_order(ct: Result) -> None:
    first = render_preview(ct.sources, ct.seg, ct.sr, size=SIZE)
    shuffled = list(ct.sources)
    random.Random(5).shuffle(shuffled)
    assert render_preview(shuffled, ct.seg, ct.sr, size=SIZE) == first
    assert render_preview(ct.sources, ct.seg, ct.sr, size=SIZE) == first


def test_the_size_is_the_long_side_and_measurements_lengthen_the_legend(ct: Result) -> None:
    small = rgb(render_preview(ct.sources, ct.seg, ct.sr, size=128))
    assert small.shape[1] == 128
    assert painted(small[:128], seg_colors(ct.seg)[0]).any()
    measured = rgb(render_preview(ct.sources, ct.seg, None, size=SIZE))
    with_sr = rgb(render_preview(ct.sources, ct.seg, ct.sr, size=SIZE))
    assert with_sr.shape[0] > measured.shape[0]  # each volume on a line of its own


def test_a_radiograph_with_its_seg(radiograph: Result) -> None:
    size = 512  # twice the image: each outline pixel (2 px wide) on a source edge pixel
    image = rgb(render_preview(radiograph.sources, radiograph.seg, radiograph.sr, size=size))
    assert image.shape[1] == size and image.shape[0] > size
    (color,) = seg_colors(radiograph.seg)
    check_outline(painted(image[:size], color), radiograph.labels[0] == 1)
    stored = dcmread(radiograph.sources[0]).pixel_array.astype(float)
    shown = image[1:size:2, 1:size:2, 0].astype(float)  # MONOCHROME1: high values dark
    assert np.corrcoef(stored.ravel(), shown.ravel())[0, 1] < -0.9


def test_a_radiograph_sr_alone_draws_its_region(radiograph: Result) -> None:
    image = rgb(render_preview(radiograph.sources, None, radiograph.sr, size=SIZE))
    drawn = painted(image[:SIZE], FIRST_REGION_COLOR)
    assert drawn.sum() > 20
    y, x = np.nonzero(drawn)
    rows, columns = radiograph.labels.shape[1:]
    mask_y, mask_x = np.nonzero(radiograph.labels[0])
    scale = SIZE / rows, SIZE / columns
    # the polyline runs along the mask's outer edge: within 3 px of its bounding box
    assert y.min() >= mask_y.min() * scale[0] - 3 and y.max() <= (mask_y.max() + 1) * scale[0] + 3
    assert x.min() >= mask_x.min() * scale[1] - 3 and x.max() <= (mask_x.max() + 1) * scale[1] + 3


def test_a_saliency_map_is_outlined_where_it_is_high(radiograph: Result) -> None:
    seg = radiograph.extra["saliency"]
    image = rgb(render_preview(radiograph.sources, seg, None, size=512))
    (color,) = seg_colors(seg)
    check_outline(painted(image[:512], color), radiograph.labels[0] == 1)


def test_nothing_to_draw_is_a_preview_error(radiograph: Result, ct: Result, tmp_path: Path) -> None:
    ds = dcmread(radiograph.sources[0])
    del ds.PixelData
    no_pixels = tmp_path / "no-pixels.dcm"
    ds.save_as(no_pixels, enforce_file_format=True)
    with pytest.raises(PreviewError, match="no pixel data"):
        render_preview([no_pixels], None, radiograph.sr)
    with pytest.raises(PreviewError, match="no image"):
        render_preview([ct.sr], None, ct.sr)  # an SR is no image
    text = tmp_path / "note.txt"
    text.write_text("not DICOM")
    with pytest.raises(PreviewError, match="cannot read"):
        render_preview([text], None, None)
    with pytest.raises(PreviewError, match="cannot read"):
        render_preview(radiograph.sources, text, None)
    with pytest.raises(PreviewError, match="at most"):
        render_preview([text] * (MAX_SOURCE_FILES + 1), None, None)
