"""Testing: DICOM instances of generated radiographs, ultrasound images and mammograms.

One CR image (PS3.3 A.2), US stills (A.6) or one digital mammogram (A.26) from the 2-D
phantoms of :mod:`dicom_ai_node.testing.phantoms`, with the canary patient attributes of
:mod:`dicom_ai_node.testing.series`. Used by the test suite and the benchmarks; nothing
here is patient data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    UltrasoundImageStorage,
    generate_uid,
)

from ..identity import UID_ROOT
from .phantoms.chest_xr import ChestRadiograph
from .phantoms.extremity_xr import ExtremityRadiograph
from .phantoms.mammography import Mammogram
from .phantoms.ultrasound import UltrasoundImage
from .series import CANARY_PATIENT_ID, new_instance

__all__ = [
    "mammogram_to_dataset",
    "radiograph_to_dataset",
    "ultrasound_to_dataset",
    "ultrasound_to_datasets",
]


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
    study_uid = study_instance_uid or generate_uid(UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "series"])
    sop_uid = generate_uid(UID_ROOT, [*entropy, series_uid, "image"])
    stored = np.round(radiograph.image * 4095).astype(np.uint16)
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    rows, cols = stored.shape
    ds = new_instance(
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
    study_uid = generate_uid(UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "series"])
    out = []
    for k, image in enumerate(images):
        suffix = "image" if k == 0 else f"image{k + 1}"  # the first keeps its old UID
        sop_uid = generate_uid(UID_ROOT, [*entropy, series_uid, suffix])
        ds = new_instance(
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
    study_uid = generate_uid(UID_ROOT, [*entropy, "study"])
    series_uid = generate_uid(UID_ROOT, [*entropy, study_uid, "series"])
    sop_uid = generate_uid(UID_ROOT, [*entropy, series_uid, "image"])
    view = mammo.view
    ds = new_instance(
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
