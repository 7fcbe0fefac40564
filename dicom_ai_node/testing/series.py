"""Test data made in code: synthetic DICOM series built from generated phantoms.

Used by the test suite, the benchmarks and ``dicom-ai-node send --demo``; nothing here
is patient data. Patient attributes hold canary values: made-up, unique strings that
the test suite looks for in every log record and every log file of a node under test
(none may appear there: logs carry UIDs, never patient names, IDs or birth dates).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from .phantoms.brain_mr import BrainPhantom
from .phantoms.chest_ct import ChestPhantom, chest_ct_phantom
from .phantoms.chest_xr import ChestRadiograph, ExtremityRadiograph
from .phantoms.cine_mr import CinePhantom
from .phantoms.mammography import Mammogram
from .phantoms.ultrasound import UltrasoundImage

__all__ = [
    "CANARY_BIRTH_DATE",
    "CANARY_PATIENT_ID",
    "CANARY_PATIENT_NAME",
    "cine_to_datasets",
    "make_ct_series",
    "mammogram_to_dataset",
    "mr_to_datasets",
    "phantom_to_datasets",
    "phi_canaries_in",
    "radiograph_to_dataset",
    "ultrasound_to_dataset",
    "ultrasound_to_datasets",
    "write_series",
]

_UID_ROOT = "1.2.826.0.1.3680043.10.1453."

#: Patient's Name (0010,0010) of generated series: a canary no log may contain.
CANARY_PATIENT_NAME = "CANARYQZ^PHIXW"
#: Patient ID (0010,0020) of generated series.
CANARY_PATIENT_ID = "PHICANARY7Q2Z"
#: Patient's Birth Date (0010,0030) of generated series.
CANARY_BIRTH_DATE = "19020304"


#: Study date and time of every generated instance.
_WHEN = dt.datetime(2026, 1, 1, 12, 0, 0)


def _instance(
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
    study_uid = study_instance_uid or generate_uid(_UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "series"])
    for_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "for"])
    dz, dy, dx = phantom.spacing_mm
    n, rows, cols = phantom.hu.shape
    out: list[Dataset] = []
    for k in range(n):
        sop_uid = generate_uid(_UID_ROOT, [*entropy, series_uid, str(k)])
        ds = _instance(
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


def radiograph_to_dataset(
    radiograph: ChestRadiograph | ExtremityRadiograph,
    *,
    seed: int = 0,
    monochrome1: bool = False,
    pixel_spacing_mm: float | None = 0.35,
    view_position: str = "PA",
    body_part_examined: str | None = "CHEST",
    study_instance_uid: str | None = None,
) -> Dataset:
    """Turn a generated radiograph into one CR image (CR Image Storage, PS3.3 A.2).

    Parameters
    ----------
    radiograph:
        The image (display density 0..1); stored as 12-bit values.
    seed:
        Makes the UIDs reproducible.
    monochrome1:
        Store it inverted as MONOCHROME1 (high values dark), as many CR readers do.
    pixel_spacing_mm:
        Imager Pixel Spacing (and Pixel Spacing); ``None`` leaves both out.
    """
    entropy = [str(seed), CANARY_PATIENT_ID, "cr"]
    study_uid = study_instance_uid or generate_uid(_UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "series"])
    sop_uid = generate_uid(_UID_ROOT, [*entropy, series_uid, "image"])
    stored = np.round(radiograph.image * 4095).astype(np.uint16)
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    rows, cols = stored.shape
    ds = _instance(
        ComputedRadiographyImageStorage,
        sop_uid,
        "CR",
        "ACC0002",
        f"XR {body_part_examined or ''} {view_position}".replace("  ", " "),
        f"{body_part_examined or ''} {view_position}".strip(),
        body_part_examined,
    )
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["L", "F"]  # rows toward the patient's left, columns to the feet
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "2"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    if pixel_spacing_mm is not None:
        ds.ImagerPixelSpacing = [f"{pixel_spacing_mm:g}", f"{pixel_spacing_mm:g}"]
        ds.PixelSpacing = [f"{pixel_spacing_mm:g}", f"{pixel_spacing_mm:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PixelData = np.ascontiguousarray(stored).astype("<u2").tobytes()
    return ds


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
    study_uid = generate_uid(_UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "series"])
    for_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "for"])
    dz, dy, dx = phantom.spacing_mm
    n, rows, cols = phantom.image.shape
    stored = np.clip(np.round(phantom.image), 0, 65535).astype("<u2")
    out: list[Dataset] = []
    for k in range(n):
        sop_uid = generate_uid(_UID_ROOT, [*entropy, series_uid, str(k)])
        ds = _instance(
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


def ultrasound_to_dataset(
    image: UltrasoundImage,
    *,
    seed: int = 0,
    body_part_examined: str | None = "THYROID",
    series_description: str = "THYROID TRANSVERSE",
    study_description: str = "US THYROID",
    calibrated: bool = True,
) -> Dataset:
    """Turn a generated B-mode image into one US image (Ultrasound Image Storage, PS3.3 A.6).

    Stored as 8-bit MONOCHROME2. The field of view is one calibrated region (Sequence of
    Ultrasound Regions, PS3.3 C.8.5.5: 2-D tissue, physical units cm), which is where
    the node reads the pixel size from; ``calibrated=False`` leaves the sequence out.
    """
    [ds] = ultrasound_to_datasets(
        [image],
        seed=seed,
        body_part_examined=body_part_examined,
        series_description=series_description,
        study_description=study_description,
        calibrated=calibrated,
    )
    return ds


def ultrasound_to_datasets(
    images: Sequence[UltrasoundImage],
    *,
    seed: int = 0,
    body_part_examined: str | None = "THYROID",
    series_description: str = "THYROID TRANSVERSE",
    study_description: str = "US THYROID",
    calibrated: bool = True,
) -> list[Dataset]:
    """Turn generated B-mode images into one series of US stills, Instance Numbers 1..n
    (see :func:`ultrasound_to_dataset`)."""
    entropy = [str(seed), CANARY_PATIENT_ID, "us"]
    study_uid = generate_uid(_UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "series"])
    out = []
    for k, image in enumerate(images):
        suffix = "image" if k == 0 else f"image{k + 1}"  # the first keeps its old UID
        sop_uid = generate_uid(_UID_ROOT, [*entropy, series_uid, suffix])
        ds = _instance(
            UltrasoundImageStorage,
            sop_uid,
            "US",
            "ACC0004",
            study_description,
            series_description,
            body_part_examined,
        )
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "4"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        _ultrasound_image(ds, image, calibrated)
        out.append(ds)
    return out


def _ultrasound_image(ds: Dataset, image: UltrasoundImage, calibrated: bool) -> None:
    """The US Image and US Region Calibration modules (PS3.3 C.8.5.6, C.8.5.5)."""
    stored = np.round(np.clip(image.image, 0.0, 1.0) * 255).astype(np.uint8)
    rows, cols = stored.shape
    ds.PatientOrientation = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    if calibrated:
        top, bottom, left, right = image.field
        region = Dataset()
        region.RegionSpatialFormat = 1  # 2-D tissue
        region.RegionDataType = 1  # tissue
        region.RegionFlags = 0
        region.RegionLocationMinX0 = left
        region.RegionLocationMinY0 = top
        region.RegionLocationMaxX1 = right - 1
        region.RegionLocationMaxY1 = bottom - 1
        region.PhysicalUnitsXDirection = 3  # cm
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = image.pixel_mm / 10.0
        region.PhysicalDeltaY = image.pixel_mm / 10.0
        ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()


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
    study_uid = generate_uid(_UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "series"])
    for_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "for"])
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
            sop_uid = generate_uid(_UID_ROOT, [*entropy, series_uid, str(k)])
            ds = _instance(
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


def mammogram_to_dataset(
    mammo: Mammogram,
    *,
    seed: int = 0,
    laterality: str = "R",
    body_part_examined: str | None = "BREAST",
    series_description: str = "",
) -> Dataset:
    """Turn a generated mammogram into one for-presentation digital mammogram (Digital
    Mammography X-Ray Image Storage - For Presentation, PS3.3 A.26): 12-bit MONOCHROME2,
    Imager Pixel Spacing from the phantom, the view (CC or MLO) coded."""
    entropy = [str(seed), CANARY_PATIENT_ID, "mg"]
    study_uid = generate_uid(_UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(_UID_ROOT, [*entropy, study_uid, "series"])
    sop_uid = generate_uid(_UID_ROOT, [*entropy, series_uid, "image"])
    view = mammo.view
    ds = _instance(
        DigitalMammographyXRayImageStorageForPresentation,
        sop_uid,
        "MG",
        "ACC0006",
        "MAMMOGRAPHY",
        series_description or f"{laterality} {view}",
        body_part_examined,
    )
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "6"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.LossyImageCompression = "00"
    ds.DetectorType = "DIRECT"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.AcquisitionContextSequence = []
    # rows toward the patient's ... chest wall on the image's left for a right breast
    ds.PatientOrientation = ["A", "FR"] if view == "MLO" else ["A", "R"]
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator = "76752008", "SCT"
    region.CodeMeaning = "Breast"
    ds.AnatomicRegionSequence = [region]
    code = Dataset()
    code.CodeValue = "399368009" if view == "MLO" else "399162004"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "medio-lateral oblique" if view == "MLO" else "cranio-caudal"
    code.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [code]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = mammo.image.shape
    spacing = f"{mammo.pixel_mm:.5g}"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.BurnedInAnnotation = "NO"
    stored = np.round(np.clip(mammo.image, 0.0, 1.0) * 4095).astype("<u2")
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds
