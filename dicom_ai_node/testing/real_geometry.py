"""Testing: a real volume in DICOM geometry, axis-aligned grids resliced into DICOM planes.

Helpers of :mod:`dicom_ai_node.testing.real_volumes`: the :class:`RealVolume` value, its
slabs and row crops, reslicing, and masks moved between grids. A grid's affine maps voxel indices
(i, j, k) of an array to patient coordinates (LPS, mm), as a NIfTI affine does after x
and y change sign. Only axis-aligned grids occur (every voxel axis parallel to a patient
axis), so reslicing is a transpose and flips: no interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

__all__ = ["PLANES", "Grid", "RealVolume", "crop_rows", "reorient", "resample_mask", "slab"]

#: Cosine above which a voxel axis counts as parallel to a patient direction.
_PARALLEL = 0.999

#: The planes :func:`.real_volumes.colin27_t1` builds, with their ImageOrientationPatient.
PLANES: dict[str, tuple[float, ...]] = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
}


@dataclass(frozen=True)
class RealVolume:
    """A real volume in DICOM patient geometry, ready for :func:`~.real_series.to_datasets`.

    Attributes
    ----------
    voxels:
        (slices, rows, columns) float32 real-world values (HU for CT, the file's
        intensities for MR); read-only, shared between calls (copy to change it).
    spacing_mm:
        (slice step, row spacing, column spacing) in mm.
    image_orientation_patient:
        ImageOrientationPatient: the row and column direction cosines (LPS).
    first_position:
        ImagePositionPatient (LPS, mm) of slice 0; slice ``k`` is at ``first_position +
        k * spacing_mm[0] * normal``, the normal being row x column direction.
    modality:
        ``"MR"`` or ``"CT"``.
    name:
        ``"colin27-t1"`` or ``"invesalius-head-ct"`` (the key of
        :data:`.real_volumes.HELD_OUT`).
    """

    voxels: npt.NDArray[np.float32]
    spacing_mm: tuple[float, float, float]
    image_orientation_patient: tuple[float, ...]
    first_position: tuple[float, float, float]
    modality: str
    name: str

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        """Unit slice normal, row direction x column direction (LPS)."""
        row, col = (
            np.asarray(self.image_orientation_patient[:3]),
            np.asarray(self.image_orientation_patient[3:]),
        )
        return np.cross(row, col)

    @property
    def plane(self) -> str:
        """``"axial"``, ``"sagittal"``, ``"coronal"`` or ``"oblique"``."""
        for plane, iop in PLANES.items():
            if np.allclose(self.image_orientation_patient, iop, atol=1e-6):
                return plane
        return "oblique"


def slab(volume: RealVolume, start: int, stop: int) -> RealVolume:
    """Slices ``start:stop`` of a volume, with ImagePositionPatient moved to ``start``.

    Raises
    ------
    ValueError
        Not ``0 <= start < stop <= slices``.
    """
    n = volume.voxels.shape[0]
    if not 0 <= start < stop <= n:
        raise ValueError(f"slab {start}:{stop} outside 0:{n} or empty")
    shift = np.asarray(volume.first_position) + start * volume.spacing_mm[0] * volume.normal
    first = (float(shift[0]), float(shift[1]), float(shift[2]))
    return replace(volume, voxels=volume.voxels[start:stop], first_position=first)


def crop_rows(volume: RealVolume, start: int, stop: int) -> RealVolume:
    """Rows ``start:stop`` of every slice, with ImagePositionPatient moved to row ``start``.

    Raises
    ------
    ValueError
        Not ``0 <= start < stop <= rows``.
    """
    rows = volume.voxels.shape[1]
    if not 0 <= start < stop <= rows:
        raise ValueError(f"rows {start}:{stop} outside 0:{rows} or empty")
    col_dir = np.asarray(volume.image_orientation_patient[3:])
    shift = np.asarray(volume.first_position) + start * volume.spacing_mm[1] * col_dir
    first = (float(shift[0]), float(shift[1]), float(shift[2]))
    return replace(volume, voxels=volume.voxels[:, start:stop], first_position=first)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``affine`` (4x4, voxel index -> LPS mm) and the array ``shape``."""

    affine: npt.NDArray[np.float64]
    shape: tuple[int, ...]

    def world(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """LPS coordinates (mm) of voxel indices (..., 3)."""
        idx = np.asarray(index, dtype=np.float64)
        return np.asarray(idx @ self.affine[:3, :3].T + self.affine[:3, 3])


def _axis_along(affine: npt.NDArray[np.float64], direction: npt.NDArray[np.float64]) -> int:
    """The voxel axis parallel to ``direction``, signed: ``axis + 1``, negative if reversed."""
    for axis in range(3):
        column = affine[:3, axis]
        cosine = float(np.dot(column, direction) / np.linalg.norm(column))
        if abs(cosine) > _PARALLEL:
            return axis + 1 if cosine > 0 else -(axis + 1)
    raise ValueError(f"no voxel axis along {direction.tolist()}: the grid is oblique")


def reorient(
    data: npt.NDArray[np.generic], grid: Grid, orientation: tuple[float, ...]
) -> tuple[npt.NDArray[np.float32], tuple[float, float, float], tuple[float, float, float]]:
    """Reslice an axis-aligned volume into (slices, rows, columns) of a DICOM plane.

    Columns follow the row direction cosines of ``orientation`` (ImageOrientationPatient,
    PS3.3 C.7.6.2.1.1), rows the column direction cosines, slices the normal (row x
    column), so that ImagePositionPatient grows from slice to slice.

    Returns
    -------
    tuple
        The voxels (float32, read-only), the spacing (slice step, row spacing, column
        spacing) in mm and the ImagePositionPatient of slice 0.

    Raises
    ------
    ValueError
        The grid has no voxel axis along one of the plane's directions.
    """
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    signed = [_axis_along(grid.affine, d) for d in (np.cross(row, col), col, row)]
    axes = [abs(s) - 1 for s in signed]
    if sorted(axes) != [0, 1, 2]:
        raise ValueError("two plane directions fall on the same voxel axis")
    out = np.transpose(data, axes)
    flips = tuple(i for i, s in enumerate(signed) if s < 0)
    if flips:
        out = np.flip(out, flips)
    voxels = np.ascontiguousarray(out, dtype=np.float32)
    voxels.setflags(write=False)
    corner = [0 if s > 0 else grid.shape[abs(s) - 1] - 1 for s in signed]
    source = np.zeros(3)
    source[axes] = corner
    first = grid.world(source)
    steps = np.linalg.norm(grid.affine[:3, :3], axis=0)[axes]
    spacing = (float(steps[0]), float(steps[1]), float(steps[2]))
    return voxels, spacing, (float(first[0]), float(first[1]), float(first[2]))


def _overlap(dst: Grid, src: Grid, axis: int) -> npt.NDArray[np.float32]:
    """(dst voxels, src voxels) fraction of each destination voxel that each source one covers."""
    d_step, d_origin = dst.affine[axis, axis], dst.affine[axis, 3]
    s_step, s_origin = src.affine[axis, axis], src.affine[axis, 3]
    centres = (d_step * np.arange(dst.shape[axis]) + d_origin - s_origin) / s_step
    half = abs(d_step / s_step) / 2
    low, high = centres - half, centres + half
    j = np.arange(src.shape[axis])
    covered = np.minimum(high[:, None], j + 0.5) - np.maximum(low[:, None], j - 0.5)
    return np.asarray(np.clip(covered, 0, None) / (2 * half), dtype=np.float32)


def resample_mask(mask: npt.NDArray[np.bool_], src: Grid, dst: Grid) -> npt.NDArray[np.bool_]:
    """Move a mask onto another axis-aligned grid: a voxel is in where half of it was.

    Each destination voxel takes the share of its extent that the source mask covers
    (exact overlap along each axis; outside the source grid counts as out). The same
    grid gives the mask back unchanged.

    Raises
    ------
    ValueError
        A grid is not diagonal (both must have voxel axis i along patient axis i).
    """
    for grid in (src, dst):
        linear = grid.affine[:3, :3]
        if not np.allclose(linear, np.diag(np.diag(linear))):
            raise ValueError("resample_mask needs diagonal affines")
    fraction = mask.astype(np.float32)
    for axis in range(3):
        weights = _overlap(dst, src, axis)
        fraction = np.moveaxis(np.tensordot(weights, fraction, axes=([1], [axis])), 0, axis)
    return np.asarray(fraction >= 0.5)
