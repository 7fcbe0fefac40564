"""Routing without body-part headers (issue 3, acceptance 2): CT series of the head, chest
and abdomen whose BodyPartExamined is removed and whose descriptions are blank are sent
to the node; the built-in body-region model names each region from the pixels, the chest
goes to the lung model, the abdomen to the kidney model, the head (no model) nowhere,
and every decision says that the image classifier decided. A real head CT (the held-out
superior slab of the InVesalius example, issue 18) without such headers is HEAD and goes to
no chest or abdomen model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.cli import main
from dicom_ai_node.domain import BodyPart, SeriesState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.tables import Series
from dicom_ai_node.testing.images import radiograph_to_dataset
from dicom_ai_node.testing.phantoms.brain_mr import brain_mr_phantom
from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph
from dicom_ai_node.testing.phantoms.extremity_xr import extremity_radiograph
from dicom_ai_node.testing.phantoms.region_ct import region_ct
from dicom_ai_node.testing.real_volumes import held_out, invesalius_head_ct, to_datasets
from dicom_ai_node.testing.series import (
    make_ct_series,
    mr_to_datasets,
    phantom_to_datasets,
    write_series,
)

from ..conftest import free_port, write_node_config
from .test_pipeline import jobs, wait_until

pytestmark = pytest.mark.integration

ANONYMOUS = {"body_part_examined": None, "series_description": "", "study_description": ""}


def _series(region: BodyPart, seed: int) -> list[Dataset]:
    """A 24-slice axial CT of ``region`` with no header that names a body part."""
    if region == BodyPart.CHEST:
        _, datasets = make_ct_series(24, 128, 128, (5.0, 2.8, 2.8), seed=seed, **ANONYMOUS)
        return datasets
    hu = region_ct(region, 24, 128, seed=seed)
    phantom = ChestPhantom(hu=hu, labels=hu.astype("uint8") * 0, spacing_mm=(5.0, 2.0, 2.0))
    datasets = phantom_to_datasets(phantom, seed=seed, patient_id=f"P{seed}", **ANONYMOUS)  # type: ignore[arg-type]
    return datasets


STUDIES = {BodyPart.HEAD: 301, BodyPart.CHEST: 302, BodyPart.ABDOMEN: 303}


def test_the_image_classifier_routes_series_without_body_part_headers(tmp_path: Path) -> None:
    port = free_port()
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [], 0.5)
    node = Node(load_settings(config))
    series = {region: _series(region, seed) for region, seed in STUDIES.items()}
    for datasets in series.values():
        assert "BodyPartExamined" not in datasets[0] and not datasets[0].SeriesDescription
    try:
        node.start()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        for datasets in series.values():
            assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="CT1"))

        def decided() -> list[Series]:
            with node.db.session() as session:
                rows = list(session.scalars(select(Series)))
            done = (SeriesState.ROUTED.value, SeriesState.NOT_ROUTED.value)
            return rows if len(rows) == 3 and all(r.state in done for r in rows) else []

        wait_until(lambda: bool(decided()), 60, "three routing decisions")
        by_uid = {row.series_instance_uid: row for row in decided()}
        for region, datasets in series.items():
            row = by_uid[datasets[0].SeriesInstanceUID]
            assert f"body part {region.value} from image classifier" in row.reason, row.reason
        for region in (BodyPart.CHEST, BodyPart.ABDOMEN):
            assert by_uid[series[region][0].SeriesInstanceUID].state == SeriesState.ROUTED.value
        head = by_uid[series[BodyPart.HEAD][0].SeriesInstanceUID]
        assert head.state == SeriesState.NOT_ROUTED.value
        by_series = {j.series_fk: j.model_name for j in jobs(node)}
        assert sorted(by_series.values()) == ["ct-chest-lungs", "ct-kidney-tumour"]
        chest_pk = by_uid[series[BodyPart.CHEST][0].SeriesInstanceUID].pk
        assert by_series[chest_pk] == "ct-chest-lungs"
    finally:
        node.stop()


def test_route_explain_asks_the_image_classifier_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "studies"
    for region, seed in STUDIES.items():
        write_series(_series(region, seed), folder / region.value)
    assert main(["route", "explain", str(folder)]) == 0
    out = capsys.readouterr().out
    for region in STUDIES:
        assert f"body part: {region.value} from image classifier" in out, out
    routed = [line.strip() for line in out.splitlines() if line.strip().startswith("-> ")]
    routed.sort()
    assert routed[:2] == ["-> ct-chest-lungs", "-> ct-kidney-tumour"], routed
    # the head is refused by every rule, each saying why (one clause per rule)
    assert routed[2].startswith(
        "-> not routed: no rule matched: 'chest-ct-lungs': body_part 'HEAD' is not one of "
        "[CHEST]; 'abdomen-ct-kidneys': body_part 'HEAD' is not one of [ABDOMEN]; "
    ), routed
    assert len(routed) == 3, routed


@pytest.mark.usefixtures("real_volumes")
def test_a_real_head_ct_without_body_part_headers_goes_to_no_chest_or_abdomen_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The held-out superior slab of a real head CT (54 slices of 1.5 mm, never trained
    on), written without BodyPartExamined and with blank descriptions: the image
    classifier calls it HEAD and every rule refuses it, the chest and abdomen rules
    because of that answer (and the head CTA rule: no angiography description)."""
    datasets = to_datasets(
        held_out(invesalius_head_ct()), seed=18, series_description="", study_description=""
    )
    assert "BodyPartExamined" not in datasets[0] and not datasets[0].SeriesDescription
    write_series(datasets, tmp_path / "studies" / "head")
    assert main(["route", "explain", str(tmp_path / "studies")]) == 0
    out = capsys.readouterr().out
    assert "body part: HEAD from image classifier" in out, out
    routed = [line.strip() for line in out.splitlines() if line.strip().startswith("-> ")]
    assert len(routed) == 1 and routed[0].startswith("-> not routed: no rule matched: "), routed
    for clause in (
        "'chest-ct-lungs': body_part 'HEAD' is not one of [CHEST]",
        "'abdomen-ct-kidneys': body_part 'HEAD' is not one of [ABDOMEN]",
    ):
        assert clause in routed[0], routed


def test_each_series_of_a_study_is_classified_once(tmp_path: Path) -> None:
    """Routing a study asks about all its series each time one completes; the pixels of
    each series are read for the body-region model once, not once per completion."""
    port = free_port()
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [], 0.3)
    node = Node(load_settings(config))
    model = node.body_region
    assert model is not None
    read: list[int] = []
    classify_files = model.classify_files

    def counting(paths: Any, decode: Any = None) -> Any:
        read.append(len(paths))
        return classify_files(paths, decode)

    model.classify_files = counting  # type: ignore[method-assign]
    study = "2.25.4242"
    series = []
    for seed, region in enumerate((BodyPart.HEAD, BodyPart.ABDOMEN, BodyPart.PELVIS)):
        hu = region_ct(region, 12, 64, seed=400 + seed)
        phantom = ChestPhantom(hu=hu, labels=hu.astype("uint8") * 0, spacing_mm=(5.0, 5.0, 5.0))
        series.append(
            phantom_to_datasets(phantom, seed=400 + seed, study_instance_uid=study, **ANONYMOUS)  # type: ignore[arg-type]
        )
    try:
        node.start()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        for datasets in series:  # one after the other, each completing on its own
            assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="CT1"))
            time.sleep(0.8)

        def decided() -> bool:
            with node.db.session() as session:
                states = [r.state for r in session.scalars(select(Series))]
            done = (SeriesState.ROUTED.value, SeriesState.NOT_ROUTED.value)
            return len(states) == 3 and all(s in done for s in states)

        wait_until(decided, 60, "three routing decisions")
    finally:
        node.stop()
    assert sorted(read) == [12, 12, 12], read


def test_mr_and_radiographs_without_body_part_headers_are_routed_from_pixels(
    tmp_path: Path,
) -> None:
    """One body-region model per modality: a T1 brain MR series and chest and forearm
    radiographs, none naming a region in any header, reach the atrophy, chest and
    fracture models, each decision saying that the image classifier decided."""
    port = free_port()
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [], 0.5)
    node = Node(load_settings(config))
    brain = mr_to_datasets(
        brain_mr_phantom(16, 128, seed=31),
        seed=31,
        body_part_examined=None,
        series_description="T1 AX",
        study_description="",
    )
    rng = np.random.default_rng(32)
    chest = radiograph_to_dataset(chest_radiograph(256, rng), seed=32, body_part_examined=None)
    forearm = radiograph_to_dataset(
        extremity_radiograph(256, rng, fracture=True),
        seed=33,
        monochrome1=True,
        view_position="AP",
        body_part_examined=None,
    )
    expected = {
        brain[0].SeriesInstanceUID: (BodyPart.HEAD, "mr-brain-atrophy"),
        chest.SeriesInstanceUID: (BodyPart.CHEST, "cxr-abnormal"),
        forearm.SeriesInstanceUID: (None, "xr-fracture"),
    }
    for datasets in (brain, [chest], [forearm]):
        assert "BodyPartExamined" not in datasets[0]
    try:
        node.start()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        for datasets in (brain, [chest], [forearm]):
            assert all(o.delivered for o in send_datasets(datasets, peer, calling_ae_title="XR1"))

        def decided() -> list[Series]:
            with node.db.session() as session:
                rows = list(session.scalars(select(Series)))
            done = (SeriesState.ROUTED.value, SeriesState.NOT_ROUTED.value)
            return rows if len(rows) == 3 and all(r.state in done for r in rows) else []

        wait_until(lambda: bool(decided()), 60, "three routing decisions")
        models = {j.series_fk: j.model_name for j in jobs(node)}
        for row in decided():
            region, model = expected[row.series_instance_uid]
            assert row.state == SeriesState.ROUTED.value, row.reason
            assert "from image classifier" in row.reason, row.reason
            if region is not None:  # a forearm or a lower leg: either limb routes there
                assert f"body part {region.value} from image classifier" in row.reason
            assert models[row.pk] == model, (row.reason, models)
    finally:
        node.stop()
