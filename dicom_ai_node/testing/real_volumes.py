"""Testing: real volumes from Debian packages (Colin27 T1 MR, a head CT) as DICOM series.

Test data only, never a runtime dependency of the node: the files come from the Debian
packages ``mricron-data`` (BSD; Colin27, a single-subject T1 average, with its reference
brain-extracted volumes ``ch2bet`` and ``ch2better``) and ``invesalius-examples``
(GPL-2; ``Cranium.inv3``, a non-contrast head CT), which ``scripts/install-tools.sh``
installs for the test suite. Nothing of them is shipped in the package. The series built
here carry the same made-up (canary) patient as every generated series
(:func:`dicom_ai_node.testing.series.new_instance`); no attribute of the real subjects is
copied. ``nibabel`` (a test dependency) reads the NIfTI files.

Geometry (PS3.3 C.7.6.2.1.1): a NIfTI affine maps voxels to RAS+ world coordinates,
DICOM's patient coordinates are LPS+, so x and y change sign. Each series has the usual
orientation of its plane: axial ``1\\0\\0\\0\\1\\0`` (columns to the patient's left,
rows to posterior), sagittal ``0\\1\\0\\0\\0\\-1``, coronal ``1\\0\\0\\0\\0\\-1``, and its
slices follow the normal (row x column direction), so that ImagePositionPatient grows
along it: axial slices go from inferior to superior, sagittal ones from the patient's
left to right, coronal ones from anterior to posterior.

The CLI writes every series as Part 10 files::

    python -m dicom_ai_node.testing.real_volumes OUTDIR
"""

from __future__ import annotations

import plistlib
import sys
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .real_geometry import PLANES, Grid, RealVolume, crop_rows, reorient, resample_mask, slab
from .real_series import to_datasets

__all__ = [
    "COLIN27_DIR",
    "CRANIUM",
    "HELD_OUT",
    "PLANES",
    "RealVolume",
    "available",
    "colin27_brain_mask",
    "colin27_t1",
    "dice",
    "held_out",
    "invesalius_head_ct",
    "slab",
    "to_datasets",
    "training_part",
]

#: Folder of Debian ``mricron-data``'s templates (Colin27: ``ch2``, ``ch2bet``, ``ch2better``).
COLIN27_DIR = Path("/usr/share/mricron/templates")
#: InVesalius project of Debian ``invesalius-examples`` holding the head CT.
CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
#: Held out from body-region training: the first held-out axial slice, counted from the
#: inferior end, of each volume (everything superior to it is test data).
HELD_OUT: dict[str, int] = {"invesalius-head-ct": 54, "colin27-t1": 90}
_REFERENCES = ("ch2bet", "ch2better")


def available() -> list[str]:
    """The Debian files these volumes need that are missing here (empty: all there)."""
    needed = [COLIN27_DIR / f"{n}.nii.gz" for n in ("ch2", *_REFERENCES)] + [CRANIUM]
    return [str(p) for p in needed if not p.is_file()]


def _check_plane(plane: str) -> tuple[float, ...]:
    if plane not in PLANES:
        raise ValueError(f"plane {plane!r} is not one of {', '.join(PLANES)}")
    return PLANES[plane]


def _nifti(name: str) -> tuple[npt.NDArray[np.generic], Grid]:
    """A Colin27 file's voxels (NIfTI order, the file's type) and its voxel-to-LPS grid."""
    import nibabel  # test-only dependency

    image = nibabel.load(COLIN27_DIR / f"{name}.nii.gz")
    if not isinstance(image, nibabel.Nifti1Image):
        raise TypeError(f"{name}.nii.gz is not a NIfTI-1 image")
    data = np.asanyarray(image.dataobj)  # scaled if the header says so
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)
    return data, Grid(lps, data.shape)


@lru_cache(maxsize=1)
def _t1() -> tuple[npt.NDArray[np.generic], Grid]:
    data, grid = _nifti("ch2")
    data.setflags(write=False)
    return data, grid


def colin27_t1(plane: str = "axial") -> RealVolume:
    """Colin27's T1 volume (181x217x181, 1 mm) as an MR series of the given plane.

    Parameters
    ----------
    plane:
        ``"axial"``, ``"sagittal"`` or ``"coronal"`` (:data:`PLANES`).

    Returns
    -------
    RealVolume
        The voxels, resliced without interpolation (the grid is axis-aligned).

    Raises
    ------
    ValueError
        An unknown plane.
    """
    iop = _check_plane(plane)
    data, grid = _t1()
    voxels, spacing, first = reorient(data, grid, iop)
    return RealVolume(voxels, spacing, iop, first, "MR", "colin27-t1")


def colin27_brain_mask(reference: str = "ch2bet", plane: str = "axial") -> npt.NDArray[np.bool_]:
    """A reference brain mask of Colin27, voxel for voxel with ``colin27_t1(plane)``.

    ``ch2bet`` is on the T1's own grid (mask: voxels > 0). ``ch2better`` is on a 0.5 mm
    grid: its mask is averaged over each 1 mm voxel (by overlap) and a voxel is brain
    when at least half of it is.

    Parameters
    ----------
    reference:
        ``"ch2bet"`` or ``"ch2better"``.
    plane:
        As for :func:`colin27_t1`.

    Returns
    -------
    numpy.ndarray
        bool, shape ``colin27_t1(plane).voxels.shape``.
    """
    if reference not in _REFERENCES:
        raise ValueError(f"reference {reference!r} is not one of {', '.join(_REFERENCES)}")
    iop = _check_plane(plane)
    oriented, _, _ = reorient(_mask_on_t1_grid(reference), _t1()[1], iop)
    return oriented.astype(bool)


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Dice overlap 2|A n B| / (|A| + |B|) of two masks of one shape (0 when both are
    empty), e.g. a brain mask against :func:`colin27_brain_mask`."""
    both = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / max(1, both)


@lru_cache(maxsize=2)
def _mask_on_t1_grid(reference: str) -> npt.NDArray[np.bool_]:
    data, ref_grid = _nifti(reference)
    mask = resample_mask(np.greater(data, 0), ref_grid, _t1()[1])
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=1)
def _cranium() -> tuple[npt.NDArray[np.int16], tuple[float, float, float]]:
    """The head CT's matrix (as InVesalius stores it) and spacing (z, y, x) in mm."""
    with tarfile.open(CRANIUM, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        plist_file = tar.extractfile(members["main.plist"])
        matrix_file = tar.extractfile(members["matrix.dat"])
        assert plist_file is not None and matrix_file is not None
        main = plistlib.load(plist_file)
        raw = matrix_file.read()
    shape = tuple(int(n) for n in main["matrix"]["shape"])
    matrix = np.frombuffer(raw, dtype=np.dtype(main["matrix"]["dtype"]).newbyteorder("<"))
    sx, sy, sz = (float(v) for v in main["spacing"])
    return matrix.reshape(shape).astype(np.int16), (sz, sy, sx)


def invesalius_head_ct() -> RealVolume:
    """The InVesalius example head CT (108 axial slices of 256x256, HU) as a CT series.

    What is known: ``main.plist`` gives the matrix shape (108, 256, 256), int16 HU and
    the spacing (x, y, z) = (0.957, 0.957, 1.5) mm, and says the series is axial; it
    has no position, orientation or laterality. InVesalius builds its matrix from the
    sorted DICOM slices and flips each image upside down (``dcm2memmap``:
    ``slice[::-1]``). The images agree: slice 0 holds the mandible and teeth, slice 107
    the vertex, so the slices run from inferior to superior; in each stored image the
    face is at the bottom and the head rest behind the skull at the top, so the rows
    are flipped back here to give the usual axial display (anterior at the top).

    Assumed: columns run to the patient's left (the scanner's usual axial orientation;
    InVesalius keeps the column order, and a head is too symmetric to check it), no
    gantry tilt, slice thickness equal to the 1.5 mm step, and a made-up position: the
    in-plane centre at x = y = 0, slice 0 at z = 0.

    Returns
    -------
    RealVolume
        HU voxels, IOP ``1\\0\\0\\0\\1\\0``, slice 0 the most inferior.
    """
    matrix, (dz, dy, dx) = _cranium()
    voxels = np.ascontiguousarray(matrix[:, ::-1, :], dtype=np.float32)
    voxels.setflags(write=False)
    _, rows, cols = voxels.shape
    first = (-dx * (cols - 1) / 2, -dy * (rows - 1) / 2, 0.0)
    return RealVolume(voxels, (dz, dy, dx), PLANES["axial"], first, "CT", "invesalius-head-ct")


def _split_z(name: str) -> float:
    """Patient z (LPS, mm) of the first held-out axial slice of a volume."""
    if name not in HELD_OUT:
        raise ValueError(f"no held-out part is defined for {name!r}")
    axial = colin27_t1("axial") if name == "colin27-t1" else invesalius_head_ct()
    return axial.first_position[2] + HELD_OUT[name] * axial.spacing_mm[0]


def _split(volume: RealVolume) -> int:
    """Index of the first held-out slice (axial) or the first training row (others)."""
    z0, split_z = volume.first_position[2], _split_z(volume.name)
    if volume.plane == "axial":  # slices go up
        index = int(np.ceil((split_z - z0) / volume.spacing_mm[0] - 1e-6))
        return min(max(index, 0), int(volume.voxels.shape[0]))
    if volume.plane in ("sagittal", "coronal"):  # rows go down
        index = int(np.floor((z0 - split_z) / volume.spacing_mm[1] + 1e-6)) + 1
        return min(max(index, 0), int(volume.voxels.shape[1]))
    raise ValueError(f"no held-out part is defined for an {volume.plane} volume")


def held_out(volume: RealVolume) -> RealVolume:
    """The superior part of a volume, which body-region training must not see.

    The split is one axial level of the patient, whatever the series' plane: the
    axial slice ``HELD_OUT[name]`` of the whole volume (counted from the inferior
    end) and everything above it. Axial series lose slices, sagittal and coronal ones
    rows; a slab or crop is split at the same level.

    Raises
    ------
    ValueError
        An unknown volume, an oblique one, or none of it above the level.
    """
    split = _split(volume)
    if volume.plane == "axial":
        return slab(volume, split, volume.voxels.shape[0])
    return crop_rows(volume, 0, split)


def training_part(volume: RealVolume) -> RealVolume:
    """The inferior part of a volume (below :func:`held_out`'s level), for training."""
    split = _split(volume)
    if volume.plane == "axial":
        return slab(volume, 0, split)
    return crop_rows(volume, split, volume.voxels.shape[1])


def _all_series() -> list[tuple[str, RealVolume]]:
    out = [(f"colin27-t1-{plane}", colin27_t1(plane)) for plane in PLANES]
    return [*out, ("invesalius-head-ct", invesalius_head_ct())]


def main(argv: list[str] | None = None) -> int:
    """Write every series as Part 10 files into ``OUTDIR/<name>[-plane]/``."""
    from .series import write_series

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dicom_ai_node.testing.real_volumes OUTDIR", file=sys.stderr)
        return 2
    missing = available()
    if missing:
        print("missing (Debian mricron-data, invesalius-examples): " + ", ".join(missing))
        return 1
    out = Path(args[0])
    for number, (folder, volume) in enumerate(_all_series(), start=1):
        paths = write_series(to_datasets(volume, seed=0, series_number=number), out / folder)
        print(f"{out / folder}: {len(paths)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
