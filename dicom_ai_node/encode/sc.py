"""Encode: a result's key images as Secondary Capture images (PS3.3 A.8.1), built with
highdicom's ``SCImage``.

What every PACS viewer shows is images: each key image of :mod:`.keyimages` becomes an
RGB SC of the source's size with the outlines, labels, measurements and the "not for
diagnosis" caption burned in (Burned In Annotation YES), in a series of its own in the
source study, referencing its source image (Source Image Sequence, PS3.3 C.7.6.1).
"""

from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from ..domain import Code, ModelOutput
from ..errors import EncodeError
from .common import EncodeContext, coded, finish
from .keyimages import KeySlice, SourcePixels, burned_in, key_slices
from .uids import result_uid
from .validate import validate_roundtrip

__all__ = ["SOURCE_IMAGE_PURPOSE", "build_key_image", "build_key_images"]

#: Purpose of Reference of the Source Image Sequence item (PS3.16 CID 7202).
SOURCE_IMAGE_PURPOSE = Code("121322", "DCM", "Source image for image processing operation")

#: Patient Orientation letters along a patient axis, negative then positive direction
#: (PS3.3 C.7.6.1.1.1): x to the left, y to the back, z to the head.
_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))

#: Maximum length of an ST (Short Text) value (Derivation Description), PS3.5 6.2.
_SHORT_TEXT_MAX = 1024


def build_key_images(
    ctx: EncodeContext, output: ModelOutput, pixels: SourcePixels
) -> list[Dataset]:
    """Build one Secondary Capture image per key image of ``output``.

    Parameters
    ----------
    ctx:
        The job's context; the SCs go into the source study, Series Number
        ``ctx.series_number`` plus the SC offset of :data:`.kinds.RESULT_KINDS`.
    output:
        The model output (see :func:`.keyimages.key_slices` for which images are key).
    pixels:
        Stored pixel values of a source image by index.

    Returns
    -------
    list[pydicom.Dataset]
        The SCs, Instance Numbers 1..n in source order, each through
        :func:`.validate.validate_roundtrip`; empty when there is no key image.

    Raises
    ------
    EncodeError
        If the output does not fit the source or an object cannot be built.
    """
    keys = key_slices(output, ctx.source)
    return [build_key_image(ctx, output, key, pixels, n) for n, key in enumerate(keys, 1)]


def build_key_image(
    ctx: EncodeContext,
    output: ModelOutput,
    key: KeySlice,
    pixels: SourcePixels,
    instance_number: int,
) -> Dataset:
    """Build the Secondary Capture of one key image (PS3.3 A.8.1, C.8.6).

    Modules beyond what ``SCImage`` sets, each from the source or the context:
    Patient and Study (copied whole from the source image), General Series (the SC
    series: Series Date/Time = content time, description from
    :meth:`.EncodeContext.series_description`), General Equipment naming the model,
    General Image (Image Type DERIVED\\SECONDARY, Burned In Annotation YES,
    Derivation Description, Image Comments, Patient Orientation of the source, Lossy
    Image Compression carried over, PS3.3 C.7.6.1.1.5), Source Image Sequence (PS3.3
    C.7.6.1.1.2: the source image, its frame 1 when it is multi-frame), SC Image (Date
    and Time of Secondary Capture = content time, Pixel Spacing of the source) and
    Contributing Equipment.

    Raises
    ------
    EncodeError
        If highdicom refuses the object or it fails its round trip.
    """
    source = ctx.source[key.index]
    picture = burned_in(ctx, output, key, pixels)
    orientation, exact = _orientation(source)
    laterality = str(source.get("Laterality", "") or "")
    laterality = laterality if laterality in ("R", "L") else ""
    when = ctx.content_datetime
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=picture,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            **ctx.series_arguments("SC"),
            sop_instance_uid=result_uid(ctx.job_key, "sc", "instance", str(key.index)),
            instance_number=instance_number,
            pixel_spacing=_pixel_spacing(source),  # type: ignore[arg-type]  # typed int, is mm
            laterality=laterality or None,
            patient_orientation=orientation,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            contributing_equipment=ctx.equipment(),
            content_date=when.date(),
            content_time=when.time(),
        )
        sc.copy_patient_and_study_information(source)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot build the key image of source {key.index}: {exc}") from exc
    _describe(sc, ctx, output, key, source, when)
    _fit_source(sc, source, exact, laterality)
    finish(sc, ctx)
    validate_roundtrip(sc)
    return sc


def _describe(
    sc: Dataset,
    ctx: EncodeContext,
    output: ModelOutput,
    key: KeySlice,
    source: Dataset,
    when: dt.datetime,
) -> None:
    # What SCImage has no parameter for (General Image and SC Image, PS3.3 C.7.6.1,
    # C.8.6.2); it stamps the Date/Time of Secondary Capture with the wall clock, which
    # the content time replaces so that re-encodes are byte-identical.
    sc.DateOfSecondaryCapture = DA(when.date())
    sc.TimeOfSecondaryCapture = TM(when.time())
    sc.BurnedInAnnotation = "YES"
    if str(source.get("LossyImageCompression", "")) == "01":
        sc.LossyImageCompression = "01"
    names = [label.name for label in output.labels if label.value in key.label_values]
    what = (
        f"AI result of {ctx.algorithm.name} {ctx.algorithm.version}, not for diagnosis: "
        f"source image with {', '.join(names) or 'no label'} outlined, labels and "
        "measurements burned in"
    )
    sc.DerivationDescription = what[:_SHORT_TEXT_MAX]
    sc.ImageComments = what
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        item.ReferencedFrameNumber = 1  # the frame the model read and the picture shows
    item.PurposeOfReferenceCodeSequence = [coded(SOURCE_IMAGE_PURPOSE)]
    sc.SourceImageSequence = [item]


def _fit_source(sc: Dataset, source: Dataset, orientation_known: bool, laterality: str) -> None:
    # What the source says of the anatomy (PS3.3 C.7.3.1, C.7.6.1): Body Part Examined
    # copied (an SC without it leaves dciodvfy asking for Laterality); Patient
    # Orientation and Laterality (both Type 2C) empty when unknown, which highdicom's
    # constructor cannot write (it needs an orientation to start from).
    if "BodyPartExamined" in source:
        sc.BodyPartExamined = source.BodyPartExamined
    if not orientation_known:
        sc.PatientOrientation = []
    if not laterality and "BodyPartExamined" not in sc:
        sc.Laterality = ""


def _pixel_spacing(source: Dataset) -> tuple[float, float] | None:
    """The source's Pixel Spacing when it is a real one (two positive values)."""
    value = source.get("PixelSpacing")
    try:
        spacing = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    if len(spacing) == 2 and all(v > 0 for v in spacing):
        return spacing[0], spacing[1]
    return None


def _orientation(source: Dataset) -> tuple[tuple[str, str], bool]:
    """Patient Orientation (PS3.3 C.7.6.1.1.1) for the SC, and whether it is known.

    The source's own when it has two one-letter values; else the main direction of its
    row and column axes (Image Orientation (Patient)); else a placeholder (``False``).
    """
    given = [str(v) for v in source.get("PatientOrientation", []) or []]
    if len(given) == 2 and all(len(v) == 1 and v in "LRAPHF" for v in given):
        return (given[0], given[1]), True
    cosines = source.get("ImageOrientationPatient")
    try:
        vectors = np.asarray([float(v) for v in cosines], float).reshape(2, 3)
    except (TypeError, ValueError):
        return ("L", "F"), False
    letters = [_letter(vector) for vector in vectors]
    return (letters[0], letters[1]), True


def _letter(vector: npt.NDArray[np.float64]) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _LETTERS[axis][int(vector[axis] > 0)]
