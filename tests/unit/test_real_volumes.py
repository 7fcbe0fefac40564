"""Real volumes as DICOM series (dicom_ai_node.testing.real_volumes): geometry, values, masks.

The geometry is checked against the source files, not against the code that made it:
every voxel's patient position, computed from the datasets' ImagePositionPatient,
ImageOrientationPatient and PixelSpacing as a viewer does (PS3.3 C.7.6.2.1.1), is taken
back through the NIfTI affine (RAS, so x and y change sign) to a voxel of ch2.nii.gz,
which must hold the same value.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_ai_node.infer.volume import load_volume, pixels_of
from dicom_ai_node.testing import real_volumes as rv
from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
    write_series,
)

from .. import conftest
from ..tools import dciodvfy_errors

pytestmark = pytest.mark.usefixtures("real_volumes")

PLANES = list(rv.PLANES)


@pytest.mark.parametrize("in_ci", [True, False])
def test_missing_debian_files_fail_in_ci_and_skip_elsewhere(
    in_ci: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rv, "available", lambda: ["/usr/share/mricron/templates/ch2.nii.gz"])
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    outcome = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(outcome, match=r"install-tools.*mricron"):
        conftest.require_real_volumes()


def _nifti(name: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    import nibabel

    image = nibabel.load(rv.COLIN27_DIR / f"{name}.nii.gz")
    assert isinstance(image, nibabel.Nifti1Image)
    return np.asarray(image.get_fdata(dtype=np.float32)), np.asarray(image.affine)


def _world(ds: Dataset) -> npt.NDArray[np.float64]:
    """(rows, columns, 3) LPS position of every pixel of one image (PS3.3 C.7.6.2.1.1)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
    origin = np.asarray(ds.ImagePositionPatient, float)
    return origin + c[..., None] * dc * iop[:3] + r[..., None] * dr * iop[3:]


def _source_index(world_lps: npt.NDArray[np.float64], affine: npt.NDArray[np.float64]) -> tuple:
    """Voxel indices of a NIfTI file at LPS positions; they must fall on voxel centres."""
    ras = world_lps * np.array([-1.0, -1.0, 1.0])
    ijk = (ras - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    assert np.allclose(ijk, np.round(ijk), atol=1e-3)
    return tuple(np.round(ijk).astype(int)[..., a] for a in range(3))


@pytest.mark.parametrize("plane", PLANES)
def test_every_colin27_voxel_is_where_the_nifti_affine_puts_it(plane: str) -> None:
    t1, affine = _nifti("ch2")
    volume = rv.colin27_t1(plane)
    datasets = rv.to_datasets(volume, seed=1)
    assert [float(v) for v in datasets[0].ImageOrientationPatient] == list(rv.PLANES[plane])
    assert len(datasets) * int(datasets[0].Rows) * int(datasets[0].Columns) == t1.size
    seen = np.zeros(t1.shape, dtype=bool)
    for ds in datasets:
        index = _source_index(_world(ds), affine)
        np.testing.assert_array_equal(pixels_of(ds), t1[index])
        seen[index] = True
    assert seen.all()  # every source voxel once: nothing dropped or repeated


@pytest.mark.parametrize("plane", PLANES)
def test_slices_go_along_the_normal_and_the_plane_is_the_usual_one(plane: str) -> None:
    datasets = rv.to_datasets(rv.colin27_t1(plane), seed=1)
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    along = [float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for ds in datasets]
    np.testing.assert_allclose(np.diff(along), 1.0)
    first, last = (np.asarray(ds.ImagePositionPatient, float) for ds in (datasets[0], datasets[-1]))
    # axial: inferior -> superior (+z); sagittal: left -> right (-x); coronal: anterior ->
    # posterior (+y), all in LPS
    expected = {"axial": (2, 1), "sagittal": (0, -1), "coronal": (1, 1)}[plane]
    axis, sign = expected
    assert sign * (last[axis] - first[axis]) > 0


@pytest.mark.parametrize("reference", ["ch2bet", "ch2better"])
@pytest.mark.parametrize("plane", PLANES)
def test_brain_masks_are_in_the_series_voxel_order(plane: str, reference: str) -> None:
    t1 = rv.colin27_t1(plane).voxels
    mask = rv.colin27_brain_mask(reference, plane)
    assert mask.shape == t1.shape and mask.dtype == bool
    if reference == "ch2bet":  # same grid as the T1: voxel for voxel
        bet, affine = _nifti("ch2bet")
        ds = rv.to_datasets(rv.colin27_t1(plane), seed=1)[40]
        np.testing.assert_array_equal(mask[40], bet[_source_index(_world(ds), affine)] > 0)
    ring = _dilate(mask, 3) & ~mask  # a 3-voxel shell just outside the brain
    inside, outside = float(t1[mask].mean()), float(t1[ring].mean())
    assert inside > 1.5 * outside, (inside, outside)  # brain vs CSF and skull around it
    assert 1.0e6 < mask.sum() < 1.8e6  # 1.0-1.8 litres at 1 mm


def _dilate(mask: npt.NDArray[np.bool_], steps: int) -> npt.NDArray[np.bool_]:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        for axis in range(3):
            grown |= np.roll(out, 1, axis) | np.roll(out, -1, axis)
        out = grown
    return out


def test_the_two_reference_masks_agree() -> None:
    bet, better = rv.colin27_brain_mask("ch2bet"), rv.colin27_brain_mask("ch2better")
    dice = 2 * (bet & better).sum() / (bet.sum() + better.sum())
    assert dice > 0.9


@pytest.mark.parametrize("plane", PLANES)
def test_the_nodes_loader_reads_colin27_back(plane: str, tmp_path: Path) -> None:
    volume = rv.colin27_t1(plane)
    paths = write_series(rv.to_datasets(volume, seed=2), tmp_path)
    loaded, _, issues = load_volume([dcmread(p) for p in reversed(paths)])
    assert loaded is not None and issues == ()
    np.testing.assert_array_equal(loaded.voxels, volume.voxels)
    np.testing.assert_allclose(loaded.spacing_mm, volume.spacing_mm, atol=1e-6)
    assert loaded.image_orientation_patient == volume.image_orientation_patient


def test_the_head_ct_is_read_back_in_hu_through_the_modality_lut(tmp_path: Path) -> None:
    volume = rv.invesalius_head_ct()
    datasets = rv.to_datasets(volume, seed=2)
    assert (datasets[0].PixelRepresentation, datasets[0].RescaleIntercept) == (0, -1024)
    paths = write_series(datasets, tmp_path)
    loaded, _, issues = load_volume([dcmread(p) for p in paths])
    assert loaded is not None and issues == ()
    assert loaded.voxels.shape == (108, 256, 256)
    np.testing.assert_array_equal(loaded.voxels, volume.voxels)
    np.testing.assert_allclose(loaded.spacing_mm, (1.5, 0.9570312, 0.9570312), atol=1e-6)
    assert loaded.voxels.min() == -1024 and 1000 < loaded.voxels.max() < 3100


def test_the_head_ct_has_its_teeth_low_and_in_front() -> None:
    """Dental enamel (> 2000 HU) is in the most inferior slices and anterior (LPS -y)."""
    volume = rv.invesalius_head_ct()
    datasets = rv.to_datasets(volume, seed=2)
    enamel = volume.voxels > 2000
    assert enamel.sum() > 50
    slices = np.nonzero(enamel.any(axis=(1, 2)))[0]
    positions = np.concatenate([_world(datasets[k])[enamel[k]] for k in slices])
    bottom = float(np.asarray(datasets[0].ImagePositionPatient, float)[2])
    top = float(np.asarray(datasets[-1].ImagePositionPatient, float)[2])
    assert positions[:, 2].max() < bottom + 0.1 * (top - bottom)
    head = _world(datasets[60])[volume.voxels[60] > -300]
    assert positions[:, 1].mean() < head[:, 1].min() + 0.35 * np.ptp(head[:, 1])


@pytest.mark.parametrize("series", ["colin27-axial", "colin27-sagittal", "colin27-coronal", "ct"])
def test_one_slice_of_each_series_passes_dciodvfy(series: str, tmp_path: Path) -> None:
    volume = rv.invesalius_head_ct() if series == "ct" else rv.colin27_t1(series.split("-")[1])
    datasets = rv.to_datasets(volume, seed=3)
    path = write_series([datasets[len(datasets) // 2]], tmp_path)[0]
    assert dciodvfy_errors(path) == []
    with_part = rv.to_datasets(volume, seed=3, body_part_examined="HEAD")
    path = write_series([with_part[len(datasets) // 2]], tmp_path / "bp")[0]
    assert dciodvfy_errors(path) == []


def test_no_real_patient_attributes() -> None:
    allowed = {
        "PatientName": CANARY_PATIENT_NAME,
        "PatientID": CANARY_PATIENT_ID,
        "PatientBirthDate": CANARY_BIRTH_DATE,
        "PatientSex": "O",
    }
    for volume in (rv.colin27_t1(), rv.invesalius_head_ct()):
        for ds in rv.to_datasets(volume, seed=4)[::20]:
            patient = {e.keyword: str(e.value) for e in ds if e.tag.group == 0x0010}
            assert patient == allowed
            text = str(ds).casefold()
            assert "promed" not in text and "colin" not in text  # the source files' names
            assert "BodyPartExamined" not in ds


def test_uids_come_from_the_seed_and_each_plane_is_its_own_series() -> None:
    a = rv.to_datasets(rv.colin27_t1("axial"), seed=5)
    again = rv.to_datasets(rv.colin27_t1("axial"), seed=5)
    sag = rv.to_datasets(rv.colin27_t1("sagittal"), seed=5)
    other = rv.to_datasets(rv.colin27_t1("axial"), seed=6)
    assert [d.SOPInstanceUID for d in a] == [d.SOPInstanceUID for d in again]
    assert a[0].SeriesInstanceUID != sag[0].SeriesInstanceUID
    assert (a[0].StudyInstanceUID, a[0].FrameOfReferenceUID) == (
        sag[0].StudyInstanceUID,
        sag[0].FrameOfReferenceUID,
    )
    assert a[0].StudyInstanceUID != other[0].StudyInstanceUID
    assert len({d.SOPInstanceUID for d in a + sag}) == len(a) + len(sag)


def test_mr_looks_like_a_3d_t1_and_ct_like_a_head_ct() -> None:
    mr = rv.to_datasets(rv.colin27_t1("sagittal"), seed=7, body_part_examined="HEAD")[0]
    assert (mr.Modality, mr.MRAcquisitionType, mr.ScanningSequence) == ("MR", "3D", "GR")
    assert mr.SeriesDescription.startswith("T1") and mr.BodyPartExamined == "HEAD"
    assert float(mr.SpacingBetweenSlices) == float(mr.SliceThickness) == 1.0
    ct = rv.to_datasets(rv.invesalius_head_ct(), seed=7, series_description="X", series_number=9)
    assert (ct[0].Modality, ct[0].SeriesDescription, ct[0].SeriesNumber) == ("CT", "X", 9)
    assert list(ct[0].ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_slab_moves_the_first_position() -> None:
    volume = rv.invesalius_head_ct()
    part = rv.slab(volume, 10, 20)
    whole = rv.to_datasets(volume, seed=8)
    cut = rv.to_datasets(part, seed=8)
    assert len(cut) == 10
    for i in (0, 9):
        assert cut[i].ImagePositionPatient == whole[10 + i].ImagePositionPatient
    np.testing.assert_array_equal(part.voxels, volume.voxels[10:20])
    with pytest.raises(ValueError, match="outside"):
        rv.slab(volume, 100, 120)


@pytest.mark.parametrize("plane", PLANES)
def test_held_out_is_the_superior_part_in_every_plane(plane: str) -> None:
    volume = rv.colin27_t1(plane)
    test, train = rv.held_out(volume), rv.training_part(volume)
    assert test.voxels.size + train.voxels.size == volume.voxels.size
    # the axial slice where the held-out part starts (counted from the inferior end)
    split_z = rv.colin27_t1("axial").first_position[2] + rv.HELD_OUT["colin27-t1"] * 1.0
    for part, held in ((test, True), (train, False)):
        z = np.array([_world(ds)[..., 2] for ds in rv.to_datasets(part, seed=9)])
        assert (z.min() >= split_z) if held else (z.max() < split_z), (plane, held)


def test_held_out_head_ct() -> None:
    volume = rv.invesalius_head_ct()
    assert rv.held_out(volume).voxels.shape[0] == 108 - rv.HELD_OUT["invesalius-head-ct"]
    np.testing.assert_array_equal(rv.training_part(volume).voxels, volume.voxels[:54])


def test_a_slab_or_crop_is_split_at_the_same_level() -> None:
    axial, sagittal = rv.colin27_t1("axial"), rv.colin27_t1("sagittal")
    part = rv.held_out(rv.slab(axial, 80, 120))
    np.testing.assert_array_equal(part.voxels, axial.voxels[90:120])
    assert part.first_position == rv.held_out(axial).first_position
    assert rv.training_part(sagittal).voxels.shape[1] == 90  # rows of axial slices 0-89
    with pytest.raises(ValueError, match="outside"):  # nothing of it is held out
        rv.held_out(rv.training_part(axial))
    with pytest.raises(ValueError, match="no held-out part"):
        rv.held_out(replace(axial, name="elsewhere"))


@pytest.mark.slow
def test_cli_writes_every_series(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dicom_ai_node.testing.real_volumes", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    counts = {p.name: len(list(p.glob("*.dcm"))) for p in tmp_path.iterdir()}
    assert counts == {
        "colin27-t1-axial": 181,
        "colin27-t1-sagittal": 181,
        "colin27-t1-coronal": 217,
        "invesalius-head-ct": 108,
    }
