"""Cine MR: the loader's phase order, the function measures from a cine label map
(``infer/findings/cine.py``) against the phantom's truth, and one SEG per phase when images repeat
positions."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.domain import AlgorithmInfo, Code
from dicom_ai_node.encode import encode_results
from dicom_ai_node.infer.findings.cine import EJECTION_FRACTION, cine_output
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.phantoms.cine_mr import CAVITY, MYOCARDIUM, cine_phantom, volume_curve
from dicom_ai_node.testing.series import cine_to_datasets

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "models" / "mr_cine_lv" / "model.toml"
ALGORITHM = AlgorithmInfo("mr-cine-lv", "1.0.0", Code("123110", "DCM", "AI"), "2.25.7", "")


def test_volume_curve_runs_from_end_diastole_to_end_systole_and_back() -> None:
    curve = volume_curve(25, 0.6, 0.36)
    assert curve[0] == 1.0 and curve.min() == pytest.approx(0.4, abs=0.01)
    assert int(np.argmin(curve)) == 9  # 0.36 of 25 frames
    assert curve[-1] > 0.9 and np.all(np.diff(curve[:9]) < 0)  # nearly refilled


def test_frames_are_ordered_by_position_then_trigger_time() -> None:
    ph = cine_phantom(3, levels=2, phases=16, size=64)
    datasets = cine_to_datasets(ph, seed=3)
    shuffled = datasets[:]
    random.Random(1).shuffle(shuffled)
    volume, ordered, issues = load_volume(shuffled, cine=True)
    assert issues == () and volume is not None
    assert volume.phases == 16 and volume.voxels.shape == (32, 64, 64)
    assert [ds.SOPInstanceUID for ds in ordered] == [ds.SOPInstanceUID for ds in datasets]
    assert volume.spacing_mm == pytest.approx(ph.spacing_mm, abs=1e-3)
    # a position that lost a phase: blocking, nothing decoded
    volume, _, issues = load_volume(datasets[:-1], cine=True)
    assert volume is None and [i.check for i in issues] == ["cine"]
    # a plain volume is not a cine series
    volume, _, issues = load_volume(datasets[::16], cine=True)
    assert volume is None and "not a cine series" in issues[-1].message


@pytest.mark.parametrize("levels", [1, 4])
def test_function_from_the_truth_labels(levels: int) -> None:
    """With the phantom's own labels as the prediction, the measures equal the truth."""
    ph = cine_phantom(8, levels=levels)
    volume, _, _ = load_volume(cine_to_datasets(ph, seed=8), cine=True)
    assert volume is not None
    label_map = ph.labels.reshape(-1, *ph.labels.shape[2:]).copy()
    manifest = load_manifest(MANIFEST)
    out = cine_output(manifest, label_map, volume)
    assert [(lab.value, lab.name) for lab in out.labels] == [
        (1, "LV cavity, end-diastole"),
        (2, "LV myocardium, end-diastole"),
        (3, "LV cavity, end-systole"),
    ]
    frames = label_map.reshape(ph.labels.shape)
    labelled = sorted({int(t) for _, t in zip(*np.nonzero(frames.any(axis=(2, 3))), strict=True)})
    assert labelled == [0, ph.end_systole]  # only end-diastole and end-systole remain
    assert np.array_equal(frames[:, 0] == CAVITY, ph.labels[:, 0] == CAVITY)
    assert np.array_equal(frames[:, 0] == MYOCARDIUM, ph.labels[:, 0] == MYOCARDIUM)
    assert np.array_equal(frames[:, ph.end_systole] == 3, ph.labels[:, ph.end_systole] == CAVITY)
    by = {(m.label_value, m.concept.meaning): m for m in out.measurements}
    ml = ph.cavity_ml()
    areas = ph.cavity_mm2().sum(axis=0)
    if levels > 1:
        # the header's Pixel Spacing has 4 significant digits: sizes agree to 0.1 %
        assert by[(1, "Volume")].value == pytest.approx(ml[0], rel=1e-3)
        assert by[(3, "Volume")].value == pytest.approx(ml[ph.end_systole], rel=1e-3)
        ef = by[(3, EJECTION_FRACTION.meaning)]
        assert ef.value == pytest.approx(100 * (1 - ml[ph.end_systole] / ml[0]), abs=0.1)
        assert ef.unit.value == "%" and ef.concept.value == "10230-1"
    else:
        assert by[(1, "Area")].value == pytest.approx(areas[0], rel=1e-3)
        fac = by[(3, "Fractional area change")].value
        assert fac == pytest.approx(100 * (1 - areas[ph.end_systole] / areas[0]), abs=0.1)
        assert not any(m.concept == EJECTION_FRACTION for m in out.measurements)


def test_no_cavity_anywhere_gives_no_label() -> None:
    ph = cine_phantom(2, levels=1, phases=16, size=64)
    volume, _, _ = load_volume(cine_to_datasets(ph, seed=2), cine=True)
    assert volume is not None
    out = cine_output(load_manifest(MANIFEST), np.zeros((16, 64, 64), np.uint8), volume)
    assert out.labels == () and out.measurements == ()


def test_a_seg_per_phase_when_positions_repeat() -> None:
    """Each SEG holds one phase at every position (plane positions must be unique)."""
    ph = cine_phantom(5, levels=3, phases=16, size=64)
    volume, ordered, _ = load_volume(cine_to_datasets(ph, seed=5), cine=True)
    assert volume is not None
    label_map = ph.labels.reshape(-1, 64, 64).copy()
    manifest = load_manifest(MANIFEST)
    out = cine_output(manifest, label_map, volume)
    results = encode_results(ordered, out, ALGORITHM, "cine-job")
    segs = [ds for ds in results if ds.Modality == "SEG"]
    assert [s.InstanceNumber for s in segs] == [1, 1 + ph.end_systole]
    assert len({s.SeriesInstanceUID for s in segs}) == 1
    diastole = {ds.SOPInstanceUID for ds in ordered[0::16]}
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in segs[0].ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == diastole
    assert [s.SegmentLabel for s in segs[1].SegmentSequence] == ["LV cavity, end-systole"]
