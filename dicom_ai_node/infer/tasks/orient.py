"""Infer: a volume's voxels turned to the closest canonical RAS orientation and back.

A :class:`~dicom_ai_node.domain.Volume` holds (slices, rows, columns): along the slice
normal, down the rows (the column direction cosines of Image Orientation (Patient)) and
along the rows (its row direction cosines), in the patient coordinate system, which is
LPS (PS3.3 C.7.6.2.1.1). Networks trained on NIfTI images (brain extraction) expect the
array axes pointing to the patient's right, anterior and superior (RAS+), as
``nibabel.as_closest_canonical`` gives them: only axis permutations and flips, no
resampling, so the way back is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AXIAL", "Canonical", "axis_directions_ras", "closest_canonical"]

#: The orientation assumed when a volume states none: axial, rows to posterior, columns
#: to the patient's left (PS3.3 C.7.6.2.1.1).
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def axis_directions_ras(orientation: Sequence[float] | None) -> npt.NDArray[np.float64]:
    """Unit directions of a volume's array axes in RAS, one column per axis.

    Parameters
    ----------
    orientation:
        Image Orientation (Patient), six direction cosines in LPS (row direction, then
        column direction, PS3.3 C.7.6.2.1.1); ``None`` is taken as :data:`AXIAL`.

    Returns
    -------
    ndarray
        (3, 3): column 0 the slice normal (row x column, the direction slices are sorted
        along), column 1 the column direction (down the rows), column 2 the row direction
        (along a row), each with its x and y negated (LPS to RAS).
    """
    iop = np.asarray(AXIAL if orientation is None else orientation, dtype=float)
    row, column = iop[:3], iop[3:]
    row = row / max(float(np.linalg.norm(row)), 1e-12)
    column = column / max(float(np.linalg.norm(column)), 1e-12)
    normal = np.cross(row, column)
    lps = np.stack([normal, column, row], axis=1)
    ras: npt.NDArray[np.float64] = lps * np.array([[-1.0], [-1.0], [1.0]])
    return ras


def _orientation(directions: npt.NDArray[np.float64]) -> tuple[tuple[int, int], ...]:
    """For each array axis, the closest world axis and the sign, as nibabel 5's
    ``io_orientation`` picks them: the closest rotation (polar decomposition), then the
    axes from the most to the least clearly aligned, each taking its largest component
    among the world axes not yet taken."""
    p, _, qs = np.linalg.svd(directions)
    rotation = p @ qs
    order = np.argsort(np.min(-(rotation**2), axis=0), kind="stable")
    out: dict[int, tuple[int, int]] = {}
    for axis in order:
        column = rotation[:, axis]
        world = int(np.argmax(np.abs(column)))
        out[int(axis)] = (world, -1 if column[world] < 0 else 1)
        rotation[world, :] = 0.0
    return tuple(out[a] for a in range(3))


@dataclass(frozen=True)
class Canonical:
    """How a volume's array maps to the closest canonical (RAS) array.

    ``axes[w]`` is the array axis that becomes world axis ``w`` (0 R, 1 A, 2 S) and
    ``flips[w]`` whether it runs the other way.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def to_canonical(self, array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """``array`` (the volume's voxel order) in RAS order (a view where possible)."""
        out = np.transpose(array, self.axes)
        flipped = tuple(w for w in range(3) if self.flips[w])
        return np.flip(out, axis=flipped) if flipped else out

    def from_canonical(self, array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """A RAS-ordered ``array`` back in the volume's voxel order: the exact inverse."""
        flipped = tuple(w for w in range(3) if self.flips[w])
        out = np.flip(array, axis=flipped) if flipped else array
        return np.transpose(out, np.argsort(self.axes))

    def shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The canonical shape of an array of ``shape``."""
        return (shape[self.axes[0]], shape[self.axes[1]], shape[self.axes[2]])


def closest_canonical(orientation: Sequence[float] | None) -> Canonical:
    """The permutation and flips that bring a volume closest to RAS.

    Parameters
    ----------
    orientation:
        The series' Image Orientation (Patient) (LPS, PS3.3 C.7.6.2.1.1), or ``None``
        (axial, :data:`AXIAL`).

    Returns
    -------
    Canonical
        Array axes and flips; an oblique series goes to the world axes it is closest to,
        as ``nibabel.as_closest_canonical`` would turn the same image.
    """
    pairs = _orientation(axis_directions_ras(orientation))
    axes = [0, 0, 0]
    flips = [False, False, False]
    for axis, (world, sign) in enumerate(pairs):
        axes[world] = axis
        flips[world] = sign < 0
    return Canonical((axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2]))
