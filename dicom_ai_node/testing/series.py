"""Testing: DICOM series of generated CT, MR and cine MR volumes, with canary patient data.

Used by the test suite and the benchmarks (the models' training scripts use the phantoms
of :mod:`dicom_ai_node.testing.phantoms` alone); nothing here is patient data. Patient
attributes hold canary values: made-up, unique strings that the test suite looks for in
every log record and every log file of a node under test (none may appear there: logs
carry UIDs, never patient names, IDs or birth dates). The single images (radiographs,
ultrasound, mammograms) are built by :mod:`dicom_ai_node.testing.images` on the same
attributes (:func:`new_instance`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ..identity import UID_ROOT
from .phantoms.brain_mr import BrainPhantom
from .phantoms.chest_ct import ChestPhantom, chest_ct_phantom
from .phantoms.cine_mr import CinePhantom

__all__ = [
    "CANARY_BIRTH_DATE",
    "CANARY_PATIENT_ID",
    "CANARY_PATIENT_NAME",
    "cine_to_datasets",
    "make_ct_series",
    "mr_to_datasets",
    "phantom_to_datasets",
    "phi_canaries_in",
    "write_series",
]

#: Patient's Name (0010,0010) of generated series: a canary no log may contain.
CANARY_PATIENT_NAME = "CANARYQZ^PHIXW"
#: Patient ID (0010,0020) of generated series.
CANARY_PATIENT_ID = "PHICANARY7Q2Z"
#: Patient's Birth Date (0010,0030) of generated series.
CANARY_BIRTH_DATE = "19020304"


#: Study date and time of every generated instance.
_WHEN = dt.datetime(2026, 1, 1, 12, 0, 0)


def new_instance(
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    accession: str,
    study_description: str,
    series_description: str,
    body_part_examined: str | None,
    patient_name: str = CANARY_PATIENT_NAME,
    patient_id: str = CANARY_PATIENT_ID,
) -> Dataset:
    """A new instance with the SOP Common, Patient, General Study and Series attributes
    every generated series shares (the patient ones are canaries), and its file meta."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDate = _WHEN.strftime("%Y%m%d")
    ds.StudyTime = _WHEN.strftime("%H%M%S")
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = "dicom-ai-node phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = CANARY_BIRTH_DATE
    ds.PatientSex = "O"
    if body_part_examined is not None:
        ds.BodyPartExamined = body_part_examined
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def phi_canaries_in(text: str) -> list[str]:
    """The canary values that occur in ``text``, in any form a log could give them.

    Either part of the name is enough (so ``^``, a space or a comma between them does not
    matter), the birth date counts also as ``1902-03-04``; case is ignored.
    """
    folded = text.casefold()
    family, given = CANARY_PATIENT_NAME.split("^")
    forms = {
        CANARY_PATIENT_NAME: (family, given),
        CANARY_PATIENT_ID: (CANARY_PATIENT_ID,),
        CANARY_BIRTH_DATE: (CANARY_BIRTH_DATE, "1902-03-04"),
    }
    return [c for c, shapes in forms.items() if any(s.casefold() in folded for s in shapes)]


def phantom_to_datasets(
    phantom: ChestPhantom,
    *,
    seed: int = 0,
    patient_name: str = CANARY_PATIENT_NAME,
    patient_id: str = CANARY_PATIENT_ID,
    body_part_examined: str | None = "CHEST",
    series_description: str = "CT THORAX 2.5mm",
    study_description: str = "CT CHEST",
    study_instance_uid: str | None = None,
) -> list[Dataset]:
    """Turn a phantom into one axial CT series (CT Image Storage, PS3.3 A.3).

    Parameters
    ----------
    phantom:
        The volume; slice 0 goes to the lowest ImagePositionPatient z.
    seed:
        Makes the UIDs reproducible.

    Returns
    -------
    list[Dataset]
        One dataset per slice with file meta, ready for ``save_as`` or C-STORE.
    """
    entropy = [str(seed), patient_id]
    study_uid = study_instance_uid or generate_uid(UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "series"])
    for_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "for"])
    dz, dy, dx = phantom.spacing_mm
    n, rows, cols = phantom.hu.shape
    out: list[Dataset] = []
    for k in range(n):
        sop_uid = generate_uid(UID_ROOT, [*entropy, series_uid, str(k)])
        ds = new_instance(
            CTImageStorage,
            sop_uid,
            "CT",
            "ACC0001",
            study_description,
            series_description,
            body_part_examined,
            patient_name,
            patient_id,
        )
        ds.SliceThickness = f"{dz:g}"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{-dx * cols / 2:g}", f"{-dy * rows / 2:g}", f"{k * dz:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{k * dz:g}"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = [f"{dy:g}", f"{dx:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.PixelData = np.ascontiguousarray(phantom.hu[k]).astype("<i2").tobytes()
        out.append(ds)
    return out


def make_ct_series(
    slices: int = 120,
    rows: int = 256,
    columns: int = 256,
    spacing_mm: tuple[float, float, float] = (2.5, 1.4, 1.4),
    seed: int = 0,
    **kwargs: str | None,
) -> tuple[ChestPhantom, list[Dataset]]:
    """Generate a chest CT phantom and its DICOM series.

    Returns
    -------
    tuple[ChestPhantom, list[Dataset]]
        The truth and the datasets.
    """
    phantom = chest_ct_phantom(slices, rows, columns, spacing_mm, seed)
    return phantom, phantom_to_datasets(phantom, seed=seed, **kwargs)  # type: ignore[arg-type]


def write_series(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    """Write datasets as DICOM files (PS3.10) named by index; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def mr_to_datasets(
    phantom: BrainPhantom,
    *,
    seed: int = 0,
    body_part_examined: str | None = "HEAD",
    series_description: str = "T1 AX",
    study_description: str = "MR BRAIN",
) -> list[Dataset]:
    """Turn a brain phantom into one axial MR series (MR Image Storage, PS3.3 A.4).

    Stored as unsigned 16-bit values (the phantom's units, rounded), slice 0 at the
    lowest ImagePositionPatient z.
    """
    entropy = [str(seed), CANARY_PATIENT_ID, "mr"]
    study_uid = generate_uid(UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "series"])
    for_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "for"])
    dz, dy, dx = phantom.spacing_mm
    n, rows, cols = phantom.image.shape
    stored = np.clip(np.round(phantom.image), 0, 65535).astype("<u2")
    out: list[Dataset] = []
    for k in range(n):
        sop_uid = generate_uid(UID_ROOT, [*entropy, series_uid, str(k)])
        ds = new_instance(
            MRImageStorage,
            sop_uid,
            "MR",
            "ACC0003",
            study_description,
            series_description,
            body_part_examined,
        )
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTrainLength = 1
        ds.SliceThickness = f"{dz:.4g}"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "3"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [
            f"{-dx * cols / 2:.4g}",
            f"{-dy * rows / 2:.4g}",
            f"{k * dz:.5g}",
        ]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{k * dz:.5g}"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = [f"{dy:.4g}", f"{dx:.4g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        out.append(ds)
    return out


#: A short-axis plane: rows along (0.6, 0.8, 0) ... an oblique cut through the chest,
#: ImageOrientationPatient (PS3.3 C.7.6.2.1.1), unit and orthogonal.
_SHORT_AXIS = ((0.8, -0.6, 0.0), (0.36, 0.48, -0.8))


def cine_to_datasets(
    phantom: CinePhantom,
    *,
    seed: int = 0,
    body_part_examined: str | None = "HEART",
    series_description: str = "CINE SAX SSFP",
    study_description: str = "MR HEART",
    heart_rate: float = 60.0,
) -> list[Dataset]:
    """Turn a cine phantom into one cine MR series (MR Image Storage, PS3.3 A.4).

    Every level is one position on an oblique short-axis plane, repeated for each phase
    with its Trigger Time (0018,1060) over one cycle at ``heart_rate``; levels step along
    the plane's normal by the phantom's level distance. Stored as unsigned 16-bit values.
    """
    entropy = [str(seed), CANARY_PATIENT_ID, "cine"]
    study_uid = generate_uid(UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "series"])
    for_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "for"])
    gap, dy, dx = phantom.spacing_mm
    levels, phases, rows, cols = phantom.image.shape
    row_dir, col_dir = (np.asarray(v) for v in _SHORT_AXIS)
    normal = np.cross(row_dir, col_dir)
    stored = np.clip(np.round(phantom.image), 0, 65535).astype("<u2")
    cycle_ms = 60_000.0 / heart_rate
    out: list[Dataset] = []
    for level in range(levels):
        corner = -row_dir * dx * cols / 2 - col_dir * dy * rows / 2 + normal * gap * level
        for phase in range(phases):
            k = level * phases + phase
            sop_uid = generate_uid(UID_ROOT, [*entropy, series_uid, str(k)])
            ds = new_instance(
                MRImageStorage,
                sop_uid,
                "MR",
                "ACC0005",
                study_description,
                series_description,
                body_part_examined,
            )
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "SS"
            ds.ScanOptions = "CG"
            ds.MRAcquisitionType = "2D"
            ds.EchoTrainLength = 1
            ds.SliceThickness = f"{min(gap, 8.0):.4g}"
            ds.TriggerTime = f"{phase * cycle_ms / phases:.1f}"
            ds.CardiacNumberOfImages = phases
            ds.HeartRate = round(heart_rate)
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "5"
            ds.SeriesNumber = 5
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [f"{v:.4f}" for v in corner]
            ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*row_dir, *col_dir)]
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = f"{gap * level:.4g}"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = rows
            ds.Columns = cols
            ds.PixelSpacing = [f"{dy:.4g}", f"{dx:.4g}"]
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.PixelData = np.ascontiguousarray(stored[level, phase]).tobytes()
            out.append(ds)
    return out
