"""Testing: a :class:`~.real_geometry.RealVolume` as one DICOM series (MR or CT Image Storage).

The patient is the made-up canary patient of :mod:`dicom_ai_node.testing.series` (through
its :func:`~dicom_ai_node.testing.series.new_instance`); UIDs come from the seed, the
volume's name and its plane, so the same call gives the same series again.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from ..identity import UID_ROOT
from .real_geometry import RealVolume
from .series import CANARY_PATIENT_ID, new_instance

__all__ = ["CT_INTERCEPT", "to_datasets"]

#: Rescale Intercept of the CT series: stored values are unsigned, HU + 1024.
CT_INTERCEPT = -1024
_PLANE_CODES = {"axial": "AX", "sagittal": "SAG", "coronal": "COR", "oblique": "OBL"}


def _ds(value: float) -> str:
    """A Decimal String (PS3.5 6.2) with up to 7 decimals and no ``-0``."""
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _stored(volume: RealVolume) -> tuple[npt.NDArray[np.uint16], int]:
    """Unsigned 16-bit stored values and the Rescale Intercept that gives the voxels back."""
    intercept = CT_INTERCEPT if volume.modality == "CT" else 0
    stored = np.round(volume.voxels.astype(np.float64) - intercept)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(f"{volume.name}: values do not fit unsigned 16 bits with {intercept}")
    return stored.astype("<u2"), intercept


def _set_modality(ds: Dataset, volume: RealVolume) -> None:
    """The acquisition attributes of the MR or CT Image module (PS3.3 C.8.3.1, C.8.2.1)."""
    if volume.modality == "MR":
        # Colin27: 27 T1-weighted 3-D spoiled gradient echo scans at 1.5 T (TR 18 ms,
        # TE 10 ms, flip angle 30 degrees), averaged
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = "18"
        ds.EchoTime = "10"
        ds.EchoTrainLength = 1
        ds.FlipAngle = "30"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = _ds(volume.spacing_mm[0])
    else:
        ds.KVP = ""
        ds.AcquisitionNumber = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"


def to_datasets(
    volume: RealVolume,
    *,
    seed: int,
    body_part_examined: str | None = None,
    series_description: str | None = None,
    study_description: str | None = None,
    series_number: int = 1,
) -> list[Dataset]:
    """Turn a real volume into one DICOM series, slice ``k`` as instance ``k + 1``.

    MR Image Storage (PS3.3 A.4) or CT Image Storage (A.3), uncompressed, unsigned 16-bit
    (CT: stored = HU + 1024, Rescale Intercept -1024 and Slope 1, the Modality LUT of
    PS3.3 C.11.1.1). Geometry from the volume (PS3.3 C.7.6.2): ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing, SliceThickness (the slice step) and, for MR,
    SpacingBetweenSlices.

    Parameters
    ----------
    volume:
        The volume (:mod:`~dicom_ai_node.testing.real_volumes`).
    seed:
        Makes the UIDs; the same seed and volume give the same study and frame of
        reference for every plane, and one series per plane.
    body_part_examined:
        Body Part Examined (0018,0015); left out when ``None``.
    series_description, study_description:
        ``None``: ``"T1 3D GRE <AX|SAG|COR>"`` and ``"MR BRAIN"`` for MR, ``"HEAD 1.5mm"``
        and ``"CT HEAD"`` for CT.
    series_number:
        Series Number (0020,0011).

    Returns
    -------
    list[Dataset]
        One dataset per slice with file meta, ready for ``save_as`` or C-STORE.
    """
    mr = volume.modality == "MR"
    code = _PLANE_CODES[volume.plane]
    if series_description is None:
        thickness = f"{volume.spacing_mm[0]:g}mm"
        series_description = f"T1 3D GRE {code}" if mr else f"HEAD {thickness}"
    if study_description is None:
        study_description = "MR BRAIN" if mr else "CT HEAD"
    entropy = [str(seed), CANARY_PATIENT_ID, volume.name]
    study_uid = generate_uid(UID_ROOT, [*entropy, "study"])
    for_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "for"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, code, str(series_number)])
    stored, intercept = _stored(volume)
    normal = volume.normal
    step, dy, dx = volume.spacing_mm
    origin = np.asarray(volume.first_position)
    out: list[Dataset] = []
    for k in range(stored.shape[0]):
        position = origin + k * step * normal
        ds = new_instance(
            MRImageStorage if mr else CTImageStorage,
            generate_uid(UID_ROOT, [*entropy, series_uid, str(k)]),
            volume.modality,
            "ACC0018",
            study_description,
            series_description,
            body_part_examined,
        )
        ds.Manufacturer = "dicom-ai-node test data"
        _set_modality(ds, volume)
        ds.SliceThickness = _ds(step)
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "18"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in volume.image_orientation_patient]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(np.dot(position, normal)))
        # value 3: AXIAL is a defined term for CT only (PS3.3 C.8.2.1.1.1), not for MR
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if code == "AX" and not mr else "OTHER"]
        if body_part_examined is None:
            # Type 2C: needed when the body part may be paired; unknown here (PS3.3 C.7.3.1)
            ds.Laterality = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        if not mr:
            ds.RescaleIntercept = str(intercept)
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        out.append(ds)
    return out
