"""Built-in model ct-chest-lungs: quality gates (lungs, nodules) on held-out phantoms, smoke
training, phantoms."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.domain import Volume
from dicom_ai_node.geometry import components
from dicom_ai_node.infer.findings.lesions import segmentation_output
from dicom_ai_node.infer.manifest import load_manifest
from dicom_ai_node.testing.phantoms.chest_ct import LEFT_LUNG, NODULE, RIGHT_LUNG, chest_ct_phantom

from ..model_gate import load_weights, segment_like_the_runner, train_smoke

torch = pytest.importorskip("torch")
F = torch.nn.functional

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "ct_chest_lungs"
# held-out seeds: training uses 0..N-1 and train.py's own scoring 10 000+
GATE_SEEDS = (20_000, 20_001, 20_002)
#: held-out phantoms with nodules (1.5 per lung, as in training) for the nodule gate
NODULE_GATE_SEEDS = tuple(range(20_100, 20_110))
INPUT = 160


def _metrics() -> dict[str, object]:
    data: dict[str, object] = json.loads((MODEL_DIR / "metrics.json").read_text())
    return data


_jit_load = load_weights


def _load() -> torch.jit.ScriptModule:
    torch.set_num_threads(2)
    return _jit_load(MODEL_DIR / "model.pt")


_segment = segment_like_the_runner


def test_quality_gate_on_held_out_phantoms() -> None:
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    dice_min = float(acceptance["dice_min"])
    error_max = float(acceptance["volume_error_max_abs_pct"])
    module = _load()
    for seed in GATE_SEEDS:
        ph = chest_ct_phantom(60, 512, 512, (2.5, 0.7, 0.7), seed=seed)
        pred = _segment(module, ph.hu, INPUT)
        for label in (RIGHT_LUNG, LEFT_LUNG):
            p, t = pred == label, ph.labels == label
            dice = 2 * np.logical_and(p, t).sum() / (p.sum() + t.sum())
            error = 100 * (int(p.sum()) - int(t.sum())) / int(t.sum())
            assert dice >= dice_min, (seed, label, dice)
            assert abs(error) <= error_max, (seed, label, error)


def test_nodule_gate_on_held_out_phantoms() -> None:
    """Through the node's own post-processing (one label per reported nodule): nodules of
    at least ``nodule_min_mm`` across are found, with few false positives per scan."""
    acceptance = _metrics()["acceptance"]
    assert isinstance(acceptance, dict)
    min_mm = float(acceptance["nodule_min_mm"])
    manifest = load_manifest(MODEL_DIR / "model.toml")
    module = _load()
    spacing = (2.5, 1.4, 1.4)  # 256 x 256: the same field of view as 512 at 0.7 mm
    found, large, false_positives = 0, 0, 0
    for seed in NODULE_GATE_SEEDS:
        ph = chest_ct_phantom(
            100, 256, 256, spacing, seed=seed, nodules_per_lung=1.5, label_nodules=True
        )
        volume = Volume(ph.hu.astype(np.float32), spacing, (), "", "", "")
        out = segmentation_output(manifest, _segment(module, ph.hu, INPUT), volume)
        assert out.label_map is not None
        reported = {lab.value for lab in out.labels if lab.name.startswith("Nodule ")}
        hit: set[int] = set()
        for box, mask in components(ph.labels == NODULE):
            overlapping = set(out.label_map[box][mask].tolist()) & reported
            hit |= overlapping
            if (6 * mask.sum() * np.prod(spacing) / np.pi) ** (1 / 3) >= min_mm:
                large += 1
                found += bool(overlapping)
        false_positives += len(reported - hit)
    assert large >= 15
    assert found / large >= float(acceptance["nodule_sensitivity_min"]), (found, large)
    per_scan = false_positives / len(NODULE_GATE_SEEDS)
    assert per_scan <= float(acceptance["false_positives_per_scan_max"]), per_scan


def test_torchscript_contract_channels_last_and_bf16() -> None:
    module = _load()
    ph = chest_ct_phantom(20, 256, 256, (5.0, 1.4, 1.4), seed=20_010)
    x = F.interpolate(
        torch.from_numpy(ph.hu.astype(np.float32)).unsqueeze(1), size=(INPUT, INPUT), mode="area"
    )
    with torch.inference_mode():
        ref = module(x)
        fast = module(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = module(x.contiguous(memory_format=torch.channels_last))
    assert ref.shape == (20, 4, INPUT, INPUT)
    assert ref.dtype == fast.dtype == bf16.dtype == torch.float32
    assert torch.allclose(ref, fast, atol=1e-3)
    agree = (ref.argmax(1) == bf16.argmax(1)).float().mean().item()
    assert agree > 0.995


def test_manifest_matches_weights_and_card() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text())
    assert manifest["name"] == "ct-chest-lungs"
    assert manifest["runner"] == "torchscript"
    assert (MODEL_DIR / manifest["weights"]).stat().st_size < 5_000_000
    assert [(lab["value"], lab["type"][0]) for lab in manifest["labels"]] == [
        (1, "3341006"),
        (2, "44029006"),
        (3, "27925004"),
    ]
    assert "Not for clinical use" in manifest["intended_use"]
    metrics = _metrics()
    assert metrics["smoke"] is False
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    acceptance = metrics["acceptance"]
    assert isinstance(acceptance, dict)
    assert f"Dice >= {acceptance['dice_min']}" in card
    assert f"{acceptance['volume_error_max_abs_pct']} %" in card


@pytest.mark.slow
def test_smoke_training_writes_loadable_torchscript(tmp_path: Path) -> None:
    out = tmp_path / "lungs"
    train_smoke(MODEL_DIR, out)
    module = _jit_load(out / "model.pt")
    with torch.inference_mode():
        y = module(torch.full((2, 1, INPUT, INPUT), -1000.0))
    assert y.shape == (2, 4, INPUT, INPUT)
    assert y.dtype == torch.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smoke"] is True
    assert metrics["held_out"]["seeds"][0] >= 10_000


def test_phantom_is_deterministic_and_lateral() -> None:
    a = chest_ct_phantom(12, 128, 128, (5.0, 2.8, 2.8), seed=7)
    b = chest_ct_phantom(12, 128, 128, (5.0, 2.8, 2.8), seed=7)
    c = chest_ct_phantom(12, 128, 128, (5.0, 2.8, 2.8), seed=8)
    assert a.hu.dtype == np.int16 and a.labels.dtype == np.uint8
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.hu, c.hu)
    # the right lung is on the image left (low column index), LPS display
    cols = np.arange(128)
    right = (a.labels == RIGHT_LUNG).sum(axis=(0, 1))
    left = (a.labels == LEFT_LUNG).sum(axis=(0, 1))
    assert (right * cols).sum() / right.sum() < 64 < (left * cols).sum() / left.sum()
    assert a.lung_volume_ml(RIGHT_LUNG) > 0 and a.lung_volume_ml(LEFT_LUNG) > 0


def test_phantom_default_arguments_still_work() -> None:
    ph = chest_ct_phantom()
    assert ph.hu.shape == ph.labels.shape == (120, 256, 256)
    assert ph.spacing_mm == (2.5, 1.4, 1.4)
    lung = ph.labels > 0
    # lung voxels are air-like on average; vessels inside stay labelled lung
    assert -950 < ph.hu[lung].mean() < -600
    assert 500 < ph.lung_volume_ml(RIGHT_LUNG) < 5000


def test_phantom_labels_nodules_on_request_and_keeps_the_rest() -> None:
    plain = chest_ct_phantom(40, 128, 128, (5.0, 2.8, 2.8), seed=20_109)
    marked = chest_ct_phantom(40, 128, 128, (5.0, 2.8, 2.8), seed=20_109, label_nodules=True)
    assert np.array_equal(plain.hu, marked.hu)
    nodule = marked.labels == NODULE
    assert nodule.any() and not (plain.labels == NODULE).any()
    assert np.array_equal(plain.labels > 0, marked.labels > 0)  # nodules were lung before
    assert np.array_equal(plain.labels[~nodule], marked.labels[~nodule])
