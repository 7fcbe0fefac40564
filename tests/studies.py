"""Multi-series studies as a modality makes them: a topogram, a thick and a thin reconstruction.

Generated from one chest CT phantom (``dicom_ai_node.testing.phantoms.chest_ct``), so the
thick series is the thin one's every other slice at 5 mm; the node's routing should always
pick the thin one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_ai_node.identity import UID_ROOT
from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom
from dicom_ai_node.testing.series import make_ct_series, phantom_to_datasets

__all__ = ["ChestCtStudy", "chest_ct_study"]


@dataclass(frozen=True)
class ChestCtStudy:
    """One study: its phantom and three series (the order a scanner makes them)."""

    phantom: ChestPhantom
    topogram: list[Dataset]
    thick: list[Dataset]
    thin: list[Dataset]

    @property
    def study_instance_uid(self) -> str:
        return str(self.thin[0].StudyInstanceUID)

    @property
    def series(self) -> dict[str, list[Dataset]]:
        """Each series by its name."""
        return {"topogram": self.topogram, "thick": self.thick, "thin": self.thin}


def _renumber(datasets: list[Dataset], number: int) -> list[Dataset]:
    for ds in datasets:
        ds.SeriesNumber = number
    return datasets


def _topogram(slice_: Dataset, seed: int) -> Dataset:
    """A localizer image: one projection-like image with a coronal orientation."""
    ds = copy.deepcopy(slice_)
    ds.SeriesInstanceUID = generate_uid(UID_ROOT, [str(seed), "topogram series"])
    ds.SOPInstanceUID = generate_uid(UID_ROOT, [str(seed), "topogram image"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.SeriesDescription = "Topogram 0.6 T20f"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def chest_ct_study(seed: int, slices: int = 60, size: int = 256) -> ChestCtStudy:
    """A chest CT study: topogram (#1), 5 mm "Body" (#2) and 2.5 mm "Lung" (#3) series.

    Parameters
    ----------
    seed:
        Makes the phantom and every UID reproducible; another seed, another study.
    slices, size:
        The thin series' slices and matrix; the thick one has half the slices.
    """
    spacing = (2.5, 1.4 * 256 / size, 1.4 * 256 / size)
    phantom, thin = make_ct_series(
        slices, size, size, spacing, seed=seed, series_description="Lung 2.5mm"
    )
    thick_phantom = ChestPhantom(
        hu=phantom.hu[::2], labels=phantom.labels[::2], spacing_mm=(5.0, *spacing[1:])
    )
    thick = phantom_to_datasets(
        thick_phantom,
        seed=seed + 1,
        series_description="Body 5mm",
        study_instance_uid=str(thin[0].StudyInstanceUID),
    )
    return ChestCtStudy(
        phantom,
        [_topogram(thick[len(thick) // 2], seed)],
        _renumber(thick, 2),
        _renumber(thin, 3),
    )
