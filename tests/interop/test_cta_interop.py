"""The head CTA model's results, made by the node's own runner and encoders from a
generated angiogram with an aneurysm: dciodvfy reports no errors, and OHIF 3.13's
libraries load the SEG on the source series and show every SR group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.phantoms.head_cta import cta_phantom
from dicom_ai_node.testing.series import phantom_to_datasets

from .model_results import run_model, validate_and_view

pytestmark = pytest.mark.interop

#: A held-out angiogram with one aneurysm (train.py trains on 0..119).
SEED = 20_700


def test_cta_results_validate_and_load_in_the_viewer(tmp_path: Path) -> None:
    ph = cta_phantom(SEED, aneurysms=1)
    [aneurysm] = ph.aneurysms
    datasets = phantom_to_datasets(
        ChestPhantom(hu=ph.hu, labels=ph.labels, spacing_mm=ph.spacing_mm),
        seed=SEED,
        body_part_examined="HEAD",
        series_description="CTA COW 0.75mm",
        study_description="CT ANGIO HEAD",
    )
    run = run_model("cta-aneurysm", datasets)
    output = run.output
    names = [label.name for label in output.labels]
    assert "Aneurysm 1" in names, names
    found = output.labels[names.index("Aneurysm 1")]
    [long_axis] = [
        m.value
        for m in output.measurements
        if m.label_value == found.value and m.concept.meaning == "Long Axis"
    ]
    assert long_axis == pytest.approx(aneurysm.diameter_mm, rel=0.5)
    seg, _, shown = validate_and_view(run, tmp_path)
    assert sum(s["voxels"] for s in shown["seg"]["segments"].values()) == int(
        np.count_nonzero(seg.pixel_array)
    )
