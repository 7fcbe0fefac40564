"""Built-in model mr-brain-extraction: deepbet's pretrained networks through the node's own
runner on a real T1 (Colin27 as axial, sagittal and coronal DICOM series), against the
reference brain masks and against deepbet's own run; manifest, card and routing."""

from __future__ import annotations

import json
import tomllib
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicom_ai_node.domain import ModelOutput, Volume
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.route import load_rules, route_study

from ..model_gate import series_of

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "mr_brain_extraction"
NAME = "mr-brain-extraction"

pytestmark = pytest.mark.usefixtures("brain_extra")


@pytest.fixture(scope="module")
def brain_extra() -> None:
    """The deepbet package (the ``brain`` extra, in the ``test`` extra) is installed."""
    pytest.importorskip("deepbet", reason="pip install -e '.[test]' installs deepbet")


def _metrics() -> dict[str, Any]:
    return json.loads((MODEL_DIR / "metrics.json").read_text())  # type: ignore[no-any-return]


@cache
def _runner() -> Any:
    return ModelRegistry(REPO / "models", Device("cpu")).runner(NAME)


@cache
def _run(plane: str) -> tuple[Volume, ModelOutput]:
    """Colin27 as a DICOM series of ``plane``, read as the node reads it, then the model."""
    from dicom_ai_node.testing.real_volumes import colin27_t1, to_datasets

    volume, _, issues = load_volume(to_datasets(colin27_t1(plane), seed=27))
    assert volume is not None and not [i for i in issues if i.blocking], issues
    runner = _runner()
    return volume, runner.postprocess(runner.predict(runner.preprocess(volume)), volume)


@pytest.mark.slow
@pytest.mark.parametrize("plane", ["axial", "sagittal", "coronal"])
def test_brain_mask_of_a_real_t1_in_every_plane(real_volumes: None, plane: str) -> None:
    from dicom_ai_node.testing.real_volumes import colin27_brain_mask, dice

    acceptance = _metrics()["acceptance"]
    volume, output = _run(plane)
    assert output.label_map is not None and output.label_map.shape == volume.voxels.shape
    mask = output.label_map > 0
    score = dice(mask, colin27_brain_mask("ch2bet", plane))
    assert score >= acceptance["brain_dice_min"], (plane, score)
    # the figures the card quotes, to the third decimal
    measured = _metrics()["results"]["bf16" if _runner().use_bf16 else "fp32"][plane]
    assert score == pytest.approx(measured["dice_ch2bet"], abs=2e-3)
    # the SR's numbers are the label map's voxels
    ml = volume.voxel_volume_mm3 / 1000
    got = {(m.label_value, m.concept.value): m.value for m in output.measurements}
    parenchyma = np.count_nonzero(output.label_map == 1) * ml
    assert got[(1, "118565006")] == pytest.approx(parenchyma)
    assert got[(1, "TIV")] == pytest.approx(np.count_nonzero(mask) * ml)
    assert got[(1, "BPF")] == pytest.approx(parenchyma / (np.count_nonzero(mask) * ml), abs=1e-5)
    assert 1500 < got[(1, "TIV")] < 2200 and 0.7 < got[(1, "BPF")] < 0.9


@pytest.mark.slow
def test_the_node_reproduces_deepbets_own_mask(real_volumes: None) -> None:
    """deepbet's run_bet on the NIfTI file and the node's runner on the DICOM series give
    the same mask (the axial series is the file's array, x and y reversed, slices first)."""
    from deepbet import BrainExtraction

    from dicom_ai_node.testing.real_volumes import COLIN27_DIR, dice

    with warnings.catch_warnings():  # deepbet loads its networks with torch.jit.load
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        extraction = BrainExtraction(no_gpu=True)
    _, mask_image, _ = extraction.run(str(COLIN27_DIR / "ch2.nii.gz"))
    theirs = (np.asarray(mask_image.dataobj) > 0)[::-1, ::-1, :].transpose(2, 1, 0)
    _, output = _run("axial")
    assert output.label_map is not None
    ours = output.label_map > 0
    assert dice(ours, theirs) >= 0.999
    assert np.count_nonzero(ours ^ theirs) <= 0.001 * np.count_nonzero(theirs)


def test_manifest_card_and_metrics_agree() -> None:
    manifest = tomllib.loads((MODEL_DIR / "model.toml").read_text("utf-8"))
    assert (manifest["name"], manifest["task"], manifest["runner"]) == (
        NAME,
        "brain-extraction",
        "torchscript",
    )
    assert manifest["package"] == "deepbet"
    assert manifest["input"]["require_axial"] is False
    card = (MODEL_DIR / "MODEL_CARD.md").read_text("utf-8")
    metrics = _metrics()
    for plane in ("axial", "sagittal", "coronal"):
        row = metrics["results"]["fp32"][plane]
        assert f"{row['dice_ch2bet']:.3f}" in card and f"{row['dice_ch2better']:.3f}" in card
    assert f"{metrics['parameters']['brain']:,}" in card
    assert "## Real images" in card and "Not for clinical use" in card
    assert f"Dice >= {metrics['acceptance']['brain_dice_min']}" in card


@pytest.mark.slow
def test_t1_brain_mr_in_any_plane_routes_to_it_and_flair_does_not(real_volumes: None) -> None:
    from dicom_ai_node.testing.real_volumes import colin27_t1, to_datasets

    registry = ModelRegistry(REPO / "models", Device("cpu"))
    rules = load_rules(REPO / "models" / "rules.yaml", list(registry.manifests))
    # a study each (seeds): in one study the model runs once, on the best series
    series = {
        plane: to_datasets(colin27_t1(plane), seed=seed, body_part_examined="BRAIN")
        for seed, plane in enumerate(("axial", "sagittal", "coronal"), start=27)
    }
    flair = to_datasets(
        colin27_t1("axial"), seed=30, series_description="FLAIR AX", body_part_examined="BRAIN"
    )
    infos = [series_of(s) for s in (*series.values(), flair)]
    routing = route_study(infos, rules, registry.specs)
    for plane, datasets in series.items():
        models = routing.for_series(datasets[0].SeriesInstanceUID).models
        assert NAME in models, plane
    # an axial T1 also goes to the phantom-trained atrophy model: both run, each alone
    axial = routing.for_series(series["axial"][0].SeriesInstanceUID).models
    assert set(axial) == {NAME, "mr-brain-atrophy"}
    assert routing.for_series(flair[0].SeriesInstanceUID).models == ()
