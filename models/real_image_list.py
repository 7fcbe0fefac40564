"""Models: the real images that can be had offline, and what each shows.

pydicom's and pydicom-data's single real images (CT, CR, MR, US), one file per image,
and, when their Debian packages are installed, the real head CT and the Colin27 T1 series
of :mod:`dicom_ai_node.testing.real_volumes` in the header variants routing depends on.
What an image shows is by looking at it (and its header), not a radiologist's read.
:mod:`models.real_images` routes them and runs the models on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicom_ai_node.domain import BodyPart
from dicom_ai_node.route.bodypart import regions_in_text

__all__ = [
    "PYDICOM",
    "RealImage",
    "pydicom_images",
    "real_images",
    "volume_images",
    "without_region_headers",
]

B = BodyPart


@dataclass(frozen=True)
class RealImage:
    """One real image or series, and what it shows (by looking; empty ``regions``: the
    region is not known)."""

    name: str
    shows: str
    regions: frozenset[BodyPart]
    load: Callable[[], list[Dataset]]
    #: Images with the same pixels (header variants) share their model runs.
    pixels: str = ""


def _pydicom_file(name: str) -> Path:
    found = get_testdata_file(name)
    if found is not None:
        return Path(found)
    import data_store  # pydicom-data

    path = next((Path(data_store.__file__).parent / "data").rglob(name), None)
    if path is None:
        raise FileNotFoundError(f"{name}: not in pydicom or pydicom-data")
    return path


def _read(name: str) -> Callable[[], list[Dataset]]:
    def load() -> list[Dataset]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some of these files are broken on purpose
            return [dcmread(_pydicom_file(name))]

    return load


#: (file, what it shows, its regions): one file per real image (the other transfer
#: syntaxes of the same image are left out), uncompressed where there is a choice.
PYDICOM: tuple[tuple[str, str, frozenset[BodyPart]], ...] = (
    ("693_UNCR.dcm", "axial head CT, 5 mm", frozenset({B.HEAD})),
    ("J2K_pixelrep_mismatch.dcm", "axial head CT at the skull base", frozenset({B.HEAD})),
    ("CT_small.dcm", "zoomed CT: a thoracic vertebra, ribs, aorta", frozenset({B.CHEST, B.SPINE})),
    (
        "bad_sequence.dcm",
        "zoomed CT: a thoracic vertebra, rib heads",
        frozenset({B.CHEST, B.SPINE}),
    ),
    ("explicit_VR-UN.dcm", "axial CT of the upper abdomen, prone", frozenset({B.ABDOMEN})),
    ("eCT_Supplemental.dcm", "enhanced CT: 2 frames of a brain perfusion map", frozenset({B.HEAD})),
    ("RG1_UNCR.dcm", "PA chest film, many round opacities in both lungs", frozenset({B.CHEST})),
    (
        "RG3_UNCR.dcm",
        "AP lower leg film, non-ossifying fibroma of the distal tibia, no fracture",
        frozenset({B.LOWER_EXTREMITY}),
    ),
    ("MR2_UNCR.dcm", "oblique coronal MR of the shoulder", frozenset({B.UPPER_EXTREMITY})),
    (
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "axial T1 MR of the upper abdomen after contrast, a liver lesion (an MPR)",
        frozenset({B.ABDOMEN}),
    ),
    ("MR_small.dcm", "a 64x64 crop of a head MR", frozenset({B.HEAD})),
    ("emri_small.dcm", "enhanced MR: 10 frames of a 64x64 head crop", frozenset({B.HEAD})),
    ("US1_UNCR.dcm", "small-parts ultrasound of a lymph node, power Doppler", frozenset()),
    ("gdcm-US-ALOKA-16.dcm", "abdominal ultrasound, two views", frozenset({B.ABDOMEN, B.PELVIS})),
    ("OBXXXX1A.dcm", "obstetric ultrasound", frozenset({B.ABDOMEN, B.PELVIS})),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "echocardiogram still", frozenset({B.HEART, B.CHEST})),
)


def pydicom_images() -> list[RealImage]:
    """The real images of pydicom and pydicom-data (``import data_store``)."""
    return [RealImage(name, shows, regions, _read(name)) for name, shows, regions in PYDICOM]


def volume_images() -> list[RealImage]:
    """The real series of :mod:`dicom_ai_node.testing.real_volumes`, each with the header
    variants routing depends on; empty when its Debian packages are missing."""
    from dicom_ai_node.testing import real_volumes as rv

    if rv.available():
        return []
    ct = "real non-contrast head CT (InVesalius), 108 axial slices of 1.5 mm"
    mr = "real T1 brain MR (Colin27), 1 mm"

    def series(name: str, plane: str, bpe: str | None, *descriptions: str) -> RealImage:
        """One series; ``descriptions`` (series, study) replace the defaults."""
        volume = rv.invesalius_head_ct if plane == "ct" else lambda: rv.colin27_t1(plane)
        series_description, study_description = descriptions or (None, None)

        def load() -> list[Dataset]:
            return rv.to_datasets(
                volume(),
                seed=18,
                body_part_examined=bpe,
                series_description=series_description,
                study_description=study_description,
            )

        shows = ct if plane == "ct" else f"{mr} {plane}"
        shows += ", no region in its headers" if descriptions else ""
        shows += f", BodyPartExamined {bpe}" if bpe else ""
        return RealImage(name, shows, frozenset({B.HEAD}), load, plane)

    return [
        series("invesalius-head-ct", "ct", None, "AXIAL 1.5mm", "CT"),
        series("invesalius-head-ct HEAD", "ct", "HEAD"),
        *(series(f"colin27-t1 {plane}", plane, None) for plane in ("axial", "sagittal", "coronal")),
        series("colin27-t1 axial, no region", "axial", None, "T1 3D GRE AX", "MR"),
    ]


def real_images(volumes: bool = True) -> list[RealImage]:
    """Every real image this module reports on."""
    return pydicom_images() + (volume_images() if volumes else [])


def without_region_headers(image: RealImage) -> RealImage:
    """The same image with no header that names a region: BodyPartExamined and the
    Anatomic Region Sequence removed, descriptions that name a region blanked (the others
    kept), so that routing must ask the image classifier."""

    def load() -> list[Dataset]:
        datasets = image.load()
        for ds in datasets:
            for keyword in ("BodyPartExamined", "AnatomicRegionSequence"):
                if keyword in ds:
                    delattr(ds, keyword)
            for keyword in ("StudyDescription", "SeriesDescription", "ProtocolName"):
                if regions_in_text(str(ds.get(keyword) or "")):
                    setattr(ds, keyword, "")
        return datasets

    name = f"{image.name}, no region headers"
    return RealImage(name, image.shows, image.regions, load, image.pixels or image.name)
