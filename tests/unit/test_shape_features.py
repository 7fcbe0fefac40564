"""Shape features of a nodule on one image (long and short axis, area, depth-to-width,
solidity), the per-image regions and area rule of projection geometry, and the pixel size
of an ultrasound image from its calibrated regions (PS3.3 C.8.5.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import caliper_axes_mm, convex_area_mm2, max_feret_diameter_mm
from dicom_ai_node.infer.findings.lesions import InstanceRules, segmentation_output
from dicom_ai_node.infer.findings.measure import (
    AREA,
    DEPTH_TO_WIDTH,
    LONG_AXIS,
    SHORT_AXIS,
    SOLIDITY,
)
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.volume import load_volume, ultrasound_spacing
from dicom_ai_node.testing.images import ultrasound_to_dataset
from dicom_ai_node.testing.phantoms.ultrasound import GLAND, NODULE, ultrasound_image


def _ellipse(rows: int, cols: int, half_depth: float, half_width: float) -> np.ndarray:
    y, x = np.mgrid[:rows, :cols]
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    return ((y - cy) / half_depth) ** 2 + ((x - cx) / half_width) ** 2 <= 1.0


def test_caliper_axes_of_an_ellipse_at_anisotropic_spacing() -> None:
    # 30 x 20 mm ellipse drawn on 0.5 x 0.25 mm pixels: 40 rows deep, 120 columns wide
    mask = _ellipse(64, 140, 20, 60)
    long, short = caliper_axes_mm(mask, 0.5, 0.25)
    assert long == pytest.approx(30.0, abs=0.6) and short == pytest.approx(20.0, abs=0.6)
    assert max_feret_diameter_mm(mask, 0.5, 0.25) == long
    assert caliper_axes_mm(np.zeros((4, 4), bool), 1, 1) == (0.0, 0.0)
    # a convex region's hull hardly exceeds its pixels; a ring's hull holds its hole
    area = float(mask.sum()) * 0.125
    assert area / convex_area_mm2(mask, 0.5, 0.25) > 0.95
    ring = _ellipse(64, 64, 30, 30) & ~_ellipse(64, 64, 20, 20)
    assert ring.sum() / convex_area_mm2(ring, 1, 1) < 0.6


def _manifest(tmp_path: Path) -> object:
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "model.toml").write_text(
        """name = "us"
version = "1"
task = "segmentation"
runner = "torchscript"
weights = "model.pt"
[preprocess]
geometry = "projection"
require_calibration = true
[postprocess]
min_instance_mm2 = 8.0
[[labels]]
value = 1
name = "Thyroid"
category = ["123037004", "SCT", "Anatomical Structure"]
type = ["69748006", "SCT", "Thyroid"]
[[labels]]
value = 2
name = "Nodule"
category = ["49755003", "SCT", "Morphologically abnormal structure"]
type = ["27925004", "SCT", "Nodule"]
instances = true
measurements = ["long_axis", "short_axis", "area", "depth_to_width", "solidity"]
"""
    )
    return load_manifest(tmp_path / "model.toml")


def test_nodules_on_separate_images_are_separate_and_measured(tmp_path: Path) -> None:
    """Two images of a series with a nodule at the same place on each: two nodules (not
    one joined through the images), each in the gland around it; a 2x2 speck (1 mm2) is
    under the area rule and becomes gland."""
    labels = np.zeros((2, 80, 100), np.uint8)
    labels[:, 10:70, 10:90] = GLAND
    tall = _ellipse(80, 100, 15, 10)  # 30 deep, 20 wide at 0.5 mm: 15 x 10 mm
    labels[0][tall] = NODULE
    labels[1][_ellipse(80, 100, 8, 16)] = NODULE  # wider than deep
    labels[1, 20:22, 20:22] = NODULE
    volume = Volume(np.zeros(labels.shape, np.float32), (1.0, 0.5, 0.5), (), "", "", "")
    manifest = _manifest(tmp_path)
    assert InstanceRules.from_manifest(manifest).min_mm2 == 8.0  # type: ignore[arg-type]
    out = segmentation_output(manifest, labels, volume)  # type: ignore[arg-type]
    nodules = [lab for lab in out.labels if lab.name.startswith("Nodule")]
    assert [lab.name for lab in nodules] == ["Nodule 1", "Nodule 2"]
    assert all(lab.finding_site and lab.finding_site.meaning == "Thyroid" for lab in nodules)
    assert labels[1, 20, 20] == GLAND
    by = {(m.label_value, m.concept.meaning): m.value for m in out.measurements}
    first, second = nodules[0].value, nodules[1].value
    assert np.array_equal(labels[0] == first, tall)  # the larger (tall) one comes first
    # edge to edge the pixels span 15.5 x 10.5 mm; the long axis may run corner to corner
    assert by[(first, LONG_AXIS.meaning)] == pytest.approx(15.5, abs=0.5)
    assert by[(first, SHORT_AXIS.meaning)] == pytest.approx(10.5, abs=0.5)
    assert by[(first, AREA.meaning)] == pytest.approx(float(tall.sum()) * 0.25)
    assert by[(first, DEPTH_TO_WIDTH.meaning)] == pytest.approx(1.5, abs=0.05)
    assert by[(second, DEPTH_TO_WIDTH.meaning)] == pytest.approx(0.5, abs=0.05)
    assert by[(first, SOLIDITY.meaning)] > 0.95
    units = {m.concept.meaning: m.unit.value for m in out.measurements}
    assert units[AREA.meaning] == "mm2" and units[SOLIDITY.meaning] == "1"


def test_pixel_size_from_the_calibrated_ultrasound_region() -> None:
    image = ultrasound_image(np.random.default_rng(4), organ="breast")
    ds = ultrasound_to_dataset(image, body_part_examined="BREAST")
    assert "PixelSpacing" not in ds
    assert ultrasound_spacing(ds) == pytest.approx((image.pixel_mm, image.pixel_mm))
    volume, _, issues = load_volume([ds], projection=True, require_calibration=True)
    assert issues == () and volume is not None
    assert volume.spacing_mm[1:] == pytest.approx((image.pixel_mm, image.pixel_mm))
    # a Doppler strip (spatial format 3) or a region in other units does not count
    strip = Dataset()
    strip.RegionSpatialFormat = 3
    strip.PhysicalUnitsXDirection = 4
    strip.PhysicalUnitsYDirection = 7
    for keyword in ("RegionLocationMinX0", "RegionLocationMinY0"):
        setattr(strip, keyword, 0)
    strip.RegionLocationMaxX1, strip.RegionLocationMaxY1 = 2000, 2000
    strip.PhysicalDeltaX, strip.PhysicalDeltaY = 0.01, 0.5
    ds.SequenceOfUltrasoundRegions.append(strip)
    assert ultrasound_spacing(ds) == pytest.approx((image.pixel_mm, image.pixel_mm))


def test_an_uncalibrated_image_is_not_measured() -> None:
    image = ultrasound_image(np.random.default_rng(5), organ="thyroid")
    ds = ultrasound_to_dataset(image, calibrated=False)
    volume, _, issues = load_volume([ds], projection=True, require_calibration=True)
    assert volume is None
    [issue] = issues
    assert issue.check == "pixel-spacing" and issue.blocking and "ultrasound" in issue.message
    volume, _, issues = load_volume([ds], projection=True)  # a radiograph model: nominal
    assert volume is not None and volume.spacing_mm == (1.0, 1.0, 1.0) and issues == ()


def test_generated_images_are_reproducible_and_labelled() -> None:
    a = ultrasound_image(np.random.default_rng(11), organ="thyroid", nodules=2)
    b = ultrasound_image(np.random.default_rng(11), organ="thyroid", nodules=2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.image.min() >= 0.0 and a.image.max() <= 1.0
    assert (a.labels == GLAND).any()
    top, bottom, left, right = a.field
    outside = np.ones(a.labels.shape, bool)
    outside[top:bottom, left:right] = False
    assert not a.labels[outside].any()  # nothing labelled in the frame
    breast = ultrasound_image(np.random.default_rng(12), organ="breast", nodules=1)
    assert not (breast.labels == GLAND).any()
    with pytest.raises(ValueError, match="organ"):
        ultrasound_image(np.random.default_rng(0), organ="liver")
