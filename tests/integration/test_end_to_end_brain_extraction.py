"""A real T1 brain MR through the node over real sockets (issue 18, acceptance 1).

Colin27's T1 volume (Debian ``mricron-data``: 181 axial slices of 217x181 at 1 mm) is
made into an MR series (``dicom_ai_node.testing.real_volumes``) and sent with the node's
SCU; the test PACS (dcmtk storescp) gets the SEG and the SR of ``mr-brain-extraction``
(deepbet's pretrained networks). The brain mask (brain parenchyma and intracranial CSF)
is rebuilt from the SEG in the source geometry twice with highdicom's reader, once by
the source instances its frames reference and once by its frames' plane positions, and
compared voxel for voxel with the volume's reference brain masks (Dice against
``ch2bet``, and against ``ch2better``). The SR's volumes must be the SEG's voxel counts
times the voxel volume, in the unit the SR states, and its brain parenchymal fraction
their ratio. Every result passes dciodvfy and the model's SEG and SR load with OHIF's
libraries. The phantom-trained ``mr-brain-atrophy`` model also runs on an axial T1 brain
series (``models/rules.yaml``): its results arrive as series of their own, and the
node's job table, not the order of arrival, says which result is whose. Measured here:
Dice 0.936 against ``ch2bet``, 0.909 against ``ch2better``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from dicom_ai_node.domain import DeliveryState, JobState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.store.tables import Delivery, Job, Result
from dicom_ai_node.testing.real_volumes import (
    RealVolume,
    available,
    colin27_brain_mask,
    colin27_t1,
    dice,
    to_datasets,
)
from dicom_ai_node.testing.series import write_series

from ..conftest import free_port, write_node_config
from ..tools import dciodvfy_errors
from .test_end_to_end import check_files_in_viewer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 18_001
MODEL = "mr-brain-extraction"
ATROPHY = "mr-brain-atrophy"
PARENCHYMA, CSF = "Brain parenchyma", "Intracranial CSF"
#: Acceptance 1 of issue 18 (deepbet's own pipeline gives 0.936 on this volume).
MIN_DICE_CH2BET = 0.93
#: ``ch2better`` is a stricter brain outline on a 0.5 mm grid: a sensible floor only.
MIN_DICE_CH2BETTER = 0.85
#: mL per unit of the SR's volume (UCUM), so that either unit it states is read right.
_ML_PER_UNIT = {"ml": 1.0, "mL": 1.0, "cm3": 1.0, "mm3": 1e-3, "l": 1e3, "L": 1e3}


@dataclass(frozen=True)
class Measured:
    """One NUM of a measurement group of the SR."""

    group: str
    name: str
    value: float
    unit: str


def _require_real_data() -> None:
    """Skip without the Debian volumes or the ``brain`` extra; fail instead in CI."""
    missing = available()
    if importlib.util.find_spec("deepbet") is None:
        missing.append("the deepbet package (pip install '.[brain]')")
    if missing:
        message = "brain extraction end to end needs " + ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (scripts/install-tools.sh and the test extra install them)")
        pytest.skip(message)


@contextlib.contextmanager
def _engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Outcome:
    """What the node made of the study: its jobs (model, state, reason) and its results
    (SOP Instance UID -> model), once every job has ended and every result is delivered."""

    jobs: list[tuple[str, str, str]]
    results: dict[str, str]


def _outcome(engine: Engine) -> Outcome | None:
    """The node's jobs and delivered results; None while anything is still under way."""
    with engine.connect() as conn:
        jobs = [
            (str(m), str(s), str(r))
            for m, s, r in conn.execute(select(Job.model_name, Job.state, Job.reason))
        ]
        rows = conn.execute(
            select(Result.sop_instance_uid, Job.model_name, Delivery.state)
            .join(Job, Result.job_fk == Job.pk)
            .join(Delivery, Delivery.result_fk == Result.pk, isouter=True)
        ).all()
    if not any(model == MODEL for model, _, _ in jobs):
        return None  # the study is not routed yet
    if not all(JobState(state).terminal for _, state, _ in jobs):
        return None
    if any(state != DeliveryState.DELIVERED for _, _, state in rows):
        return None
    return Outcome(jobs, {str(uid): str(model) for uid, model, _ in rows})


def _wait_for_everything(
    db_url: str, pacs_dir: Path, timeout_s: float = 240.0
) -> dict[str, list[tuple[Path, Dataset]]]:
    """Wait (bounded) until every job of the node is done and each of its results is
    delivered and readable at the PACS; returns them by model. The node's own tables
    say which results to expect, so none is taken for another by its arrival order."""
    deadline = time.monotonic() + timeout_s
    outcome: Outcome | None = None
    with _engine(db_url) as engine:
        while time.monotonic() < deadline and outcome is None:
            outcome = _outcome(engine)
            if outcome is None:
                time.sleep(0.5)
    if outcome is None:
        raise TimeoutError(f"the node's jobs were not done and delivered after {timeout_s} s")
    assert all(state == JobState.DONE for _, state, _ in outcome.jobs), outcome.jobs
    expected = outcome.results
    while True:
        found: dict[str, tuple[Path, Dataset]] = {}
        for path in sorted(p for p in pacs_dir.iterdir() if p.is_file()):
            with contextlib.suppress(InvalidDicomError, EOFError, OSError):
                ds = dcmread(path)
                found[str(ds.SOPInstanceUID)] = (path, ds)
        if set(expected) <= set(found):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(set(expected) & set(found))} of {len(expected)} results")
        time.sleep(0.25)
    by_model: dict[str, list[tuple[Path, Dataset]]] = {}
    for uid, model in expected.items():
        by_model.setdefault(model, []).append(found[uid])
    return by_model


def _one(results: list[tuple[Path, Dataset]], modality: str) -> tuple[Path, Dataset]:
    [found] = [(p, ds) for p, ds in results if ds.Modality == modality]
    return found


def _volume_of(array: npt.NDArray[np.bool_], like: RealVolume, for_uid: str) -> hd.Volume:
    """``array`` (voxel for voxel with ``like``) as a highdicom volume in its geometry:
    axis 0 along the slice normal from ``first_position``, axis 1 down the rows (the
    column direction cosines), axis 2 along a row (the row direction cosines)."""
    row_cosines, column_cosines = (
        np.asarray(like.image_orientation_patient[:3]),
        np.asarray(like.image_orientation_patient[3:]),
    )
    direction = np.column_stack([like.normal, column_cosines, row_cosines])
    return hd.Volume.from_components(
        array.astype(np.uint8),
        spacing=like.spacing_mm,
        coordinate_system="PATIENT",
        position=like.first_position,
        direction=direction.ravel().tolist(),
        frame_of_reference_uid=for_uid,
    )


def brain_mask_from_seg(
    seg_path: Path, source: list[Dataset], volume: RealVolume
) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """The SEG's brain mask (parenchyma or CSF) voxel for voxel with ``volume``.

    Read with highdicom (``segread``) twice: by the source SOP Instance each frame
    references (Derivation Image / Source Image Sequence), in the order of ``source``
    (slice ``k`` of the volume is ``source[k]``), and as a volume placed by its frames'
    Plane Position (Patient), matched to the source grid without resampling. Both must
    give the same mask. Also returns the voxel count of each segment by label.
    """
    seg = hd.seg.segread(seg_path)
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    assert {PARENCHYMA, CSF} <= set(numbers), numbers
    wanted = [numbers[PARENCHYMA], numbers[CSF]]
    by_reference = seg.get_pixels_by_source_instance(
        [str(ds.SOPInstanceUID) for ds in source], segment_numbers=wanted
    )
    assert by_reference.shape == (*volume.voxels.shape, 2), by_reference.shape
    counts = {
        PARENCHYMA: int(np.count_nonzero(by_reference[..., 0])),
        CSF: int(np.count_nonzero(by_reference[..., 1])),
    }
    mask: npt.NDArray[np.bool_] = np.asarray(by_reference.any(axis=-1), dtype=bool)
    assert not np.logical_and(by_reference[..., 0], by_reference[..., 1]).any()  # disjoint
    grid = _volume_of(mask, volume, str(source[0].FrameOfReferenceUID))
    by_position = seg.get_volume(segment_numbers=wanted, combine_segments=True)
    placed = by_position.match_geometry(grid)
    assert placed.geometry_equal(grid)
    assert np.array_equal(placed.array > 0, mask), "frame references and plane positions differ"
    return mask, counts


def measurements(sr_paths: list[Path]) -> list[Measured]:
    """Every NUM of every measurement group of the model's SRs (highdicom's reader)."""
    out = []
    for path in sr_paths:
        report = hd.sr.srread(path).content
        assert isinstance(report, hd.sr.MeasurementReport)
        groups = [
            *report.get_planar_roi_measurement_groups(),
            *report.get_volumetric_roi_measurement_groups(),
            *report.get_image_measurement_groups(),
        ]
        for group in groups:
            name = str(group.tracking_identifier)
            for m in group.get_measurements():
                out.append(Measured(name, m.name.meaning, float(m.value), m.unit.value))
    return out


def _find(found: list[Measured], name: str, group: str | None = None) -> Measured:
    """The one measurement called ``name`` (in the group of ``group``, if given)."""
    hits = [m for m in found if m.name == name and group in (None, m.group)]
    assert len(hits) == 1, (name, group, found)
    return hits[0]


def check_sr_against_mask(sr_paths: list[Path], counts: dict[str, int], voxel_mm3: float) -> None:
    """Each label's volume is its voxels in the SEG times the voxel volume, in the SR's own
    unit; the total intracranial volume is that of both labels; the brain parenchymal
    fraction is parenchyma over that total."""
    found = measurements(sr_paths)
    parenchyma = _find(found, "Volume", PARENCHYMA)
    csf = _find(found, "Volume", CSF)
    tiv = _find(found, "Total intracranial volume")
    bpf = _find(found, "Brain parenchymal fraction")
    print(f"SR: {parenchyma}, {csf}, {tiv}, {bpf}")
    for m, voxels in (
        (parenchyma, counts[PARENCHYMA]),
        (csf, counts[CSF]),
        (tiv, counts[PARENCHYMA] + counts[CSF]),
    ):
        assert m.unit in _ML_PER_UNIT, m
        truth_ml = voxels * voxel_mm3 / 1000.0
        assert abs(m.value * _ML_PER_UNIT[m.unit] - truth_ml) <= 1e-4 * truth_ml + 0.005, m
    assert abs(bpf.value - counts[PARENCHYMA] / sum(counts.values())) < 5e-4, bpf
    assert abs(bpf.value - parenchyma.value / tiv.value) < 5e-4, (bpf, parenchyma, tiv)


def test_colin27_t1_gets_a_brain_mask_that_matches_the_reference(
    tmp_path: Path, storescp: tuple[int, Path], node_factory: type
) -> None:
    _require_real_data()
    pacs_port, pacs_dir = storescp
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    config = write_node_config(tmp_path, db_url, port, [("PACS", pacs_port)])
    node = node_factory(config, port)
    node.start(timeout_s=120.0)
    volume = colin27_t1("axial")
    datasets = to_datasets(
        volume, seed=SEED, body_part_examined="BRAIN", series_description="T1 MPRAGE AX 1mm"
    )
    for k in (0, len(datasets) - 1):  # slice k of the volume is datasets[k]
        where = np.asarray(volume.first_position) + k * volume.spacing_mm[0] * volume.normal
        assert np.allclose([float(v) for v in datasets[k].ImagePositionPatient], where)
    outcomes = send_datasets(datasets, Peer("AI_NODE", "127.0.0.1", port), calling_ae_title="PACS")
    assert all(o.delivered for o in outcomes) and len(outcomes) == len(datasets) == 181
    study_uid = str(datasets[0].StudyInstanceUID)
    by_model = _wait_for_everything(db_url, pacs_dir)
    results = by_model[MODEL]
    for _, ds in (r for rs in by_model.values() for r in rs):
        assert ds.StudyInstanceUID == study_uid
        assert ds.ManufacturerModelName in ds.SeriesDescription  # "AI <model> <version> <kind>"

    seg_path, seg = _one(results, "SEG")
    assert seg.ManufacturerModelName == MODEL and MODEL in seg.SeriesDescription
    assert {str(s.SegmentAlgorithmName) for s in seg.SegmentSequence} == {MODEL}
    mask, counts = brain_mask_from_seg(seg_path, datasets, volume)
    against = {ref: dice(mask, colin27_brain_mask(ref, "axial")) for ref in ("ch2bet", "ch2better")}
    print(f"Dice of the node's brain mask: {against}; voxels {counts}")
    assert against["ch2bet"] >= MIN_DICE_CH2BET, against
    assert against["ch2better"] >= MIN_DICE_CH2BETTER, against

    sr_paths = [p for p, ds in results if ds.Modality == "SR"]
    assert sr_paths and all(MODEL in dcmread(p).SeriesDescription for p in sr_paths)
    voxel_mm3 = float(np.prod(volume.spacing_mm))
    check_sr_against_mask(sr_paths, counts, voxel_mm3)
    for path, _ in (r for rs in by_model.values() for r in rs):
        assert dciodvfy_errors(path) == [], path.name

    source_dir = tmp_path / "source"
    write_series(datasets, source_dir)
    check_files_in_viewer(_one(results, "SR")[0], seg_path, source_dir)
    # the rules run both models on a T1 brain series (models/rules.yaml): the atrophy
    # model's results are series of their own, told apart by the model that made them
    assert set(by_model) == {MODEL, ATROPHY}, set(by_model)
    atrophy = by_model[ATROPHY]
    assert {ds.Modality for _, ds in atrophy} >= {"SEG", "SR"}, [ds.Modality for _, ds in atrophy]
    assert all(ds.ManufacturerModelName == ATROPHY for _, ds in atrophy)
    series = [str(ds.SeriesInstanceUID) for _, ds in (*results, *atrophy)]
    numbers = [int(ds.SeriesNumber) for _, ds in (*results, *atrophy)]
    assert len(set(series)) == len(series) and len(set(numbers)) == len(numbers), numbers
    assert "PHANTOM" not in node.log()
