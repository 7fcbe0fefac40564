"""Test data shared by the encode tests: the model, its labels, and CT, MR and radiograph
cases (source datasets and a model output on them), built in code from the phantoms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_ai_node.domain import (
    AlgorithmInfo,
    Code,
    Measurement,
    ModelOutput,
    OutputLabel,
    QualityIssue,
)
from dicom_ai_node.encode import device_uid, result_series_number
from dicom_ai_node.encode.common import EncodeContext
from dicom_ai_node.infer.findings.measure import LONG_AXIS, ML, MM, MM3_PER_ML, VOLUME
from dicom_ai_node.testing.images import radiograph_to_dataset
from dicom_ai_node.testing.phantoms.brain_mr import brain_mr_phantom
from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph
from dicom_ai_node.testing.series import make_ct_series, mr_to_datasets

__all__ = [
    "ALGORITHM",
    "ANATOMY",
    "CASES",
    "LABELS",
    "LATER",
    "WHEN",
    "Case",
    "algorithm",
    "cr_case",
    "ct_case",
    "labelled_case",
    "mr_case",
    "named_label",
    "phantom_cases",
    "volumes",
]

ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
FINDING = Code("404684003", "SCT", "Clinical finding")
LABELS = (  # as in models/ct-chest-lungs/model.toml
    OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), (220, 120, 80)),
    OutputLabel(2, "Left lung", ANATOMY, Code("44029006", "SCT", "Left lung"), (80, 150, 220)),
)
VENTRICLES = OutputLabel(
    1, "Lateral ventricles", ANATOMY, Code("66720007", "SCT", "Lateral ventricle"), (40, 220, 90)
)
NODULE = OutputLabel(1, "Nodule", FINDING, Code("27925004", "SCT", "Nodule"), (255, 60, 60))
#: The content time of the SEG, SR, GSPS and PDF tests.
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)
#: The content time of the key image, KOS and profile tests.
LATER = dt.datetime(2026, 12, 8, 10, 30, 0)


def algorithm(name: str, version: str) -> AlgorithmInfo:
    """An AI model of the node's own, with its deterministic Device UID."""
    return AlgorithmInfo(
        name=name,
        version=version,
        family=Code("123110", "DCM", "Artificial Intelligence"),
        device_uid=device_uid(name, version),
    )


ALGORITHM = algorithm("ct-chest-lungs", "1.0.0")


def volumes(
    label_map: npt.NDArray[np.uint8], spacing_mm: Sequence[float]
) -> tuple[Measurement, ...]:
    """The volume of each of :data:`LABELS` in ``label_map``, in ml."""
    voxel_ml = float(np.prod(spacing_mm)) / MM3_PER_ML
    return tuple(
        Measurement(
            label.value, VOLUME, float(np.count_nonzero(label_map == label.value)) * voxel_ml, ML
        )
        for label in LABELS
    )


@dataclass(frozen=True)
class Case:
    """A source series, a model output on it, the model and the content time."""

    source: list[Dataset]
    output: ModelOutput
    algorithm: AlgorithmInfo = ALGORITHM
    when: dt.datetime = WHEN

    def pixels(self, index: int) -> npt.NDArray[np.generic]:
        return np.asarray(self.source[index].pixel_array)

    def context(
        self, job_key: str = "job-1", revision: int = 0, predecessors: Sequence[Dataset] = ()
    ) -> EncodeContext:
        return EncodeContext(
            source=self.source,
            algorithm=self.algorithm,
            job_key=job_key,
            series_number=result_series_number(9001, revision),
            content_datetime=self.when,
            revision=revision,
            predecessors=predecessors,
        )


# --- cases with the labels each file needs: lungs, ventricles, a nodule ---------------------


def ct_case() -> Case:
    """Both lungs of a chest CT phantom, with their volumes."""
    phantom, source = make_ct_series(16, 192, 192, spacing_mm=(5.0, 2.0, 2.0))
    output = ModelOutput(LABELS, phantom.labels, volumes(phantom.labels, phantom.spacing_mm))
    return Case(source, output, algorithm("lungs", "1.2.0"), LATER)


def mr_case() -> Case:
    """The lateral ventricles of a brain MR phantom, with a volume."""
    phantom = brain_mr_phantom(slices=12, size=160, seed=1)
    label_map = (phantom.labels == 2).astype(np.uint8)
    output = ModelOutput((VENTRICLES,), label_map, (Measurement(1, VOLUME, 21.5, ML),))
    return Case(mr_to_datasets(phantom, seed=1), output, algorithm("brain-mr", "1.2.0"), LATER)


def cr_case() -> Case:
    """The nodule of a MONOCHROME1 chest radiograph, with a long axis."""
    radiograph = chest_radiograph(384, np.random.default_rng(3), "nodule")
    ds = radiograph_to_dataset(radiograph, seed=3, monochrome1=True)
    label_map = radiograph.mask[None].astype(np.uint8)
    output = ModelOutput((NODULE,), label_map, (Measurement(1, LONG_AXIS, 14.2, MM),))
    return Case([ds], output, algorithm("chest-xr", "1.2.0"), LATER)


CASES: dict[str, Callable[[], Case]] = {"ct": ct_case, "mr": mr_case, "cr": cr_case}


# --- cases with a label per value of the phantom's label map ---------------------------------


def named_label(value: int, name: str) -> OutputLabel:
    """An anatomical label coded (and coloured) after its value alone."""
    return OutputLabel(value, name, ANATOMY, Code("3341006", "SCT", name), (40 * value, 200, 90))


def labelled_case(
    source: list[Dataset],
    label_map: npt.NDArray[np.uint8],
    names: Sequence[str],
    voxels_per_ml: float,
    quality_issues: tuple[QualityIssue, ...] = (),
) -> Case:
    """Labels 1, 2, ... named ``names``, each with its voxel count / ``voxels_per_ml`` as
    its volume."""
    labels = tuple(named_label(v, n) for v, n in enumerate(names, start=1))
    measured = tuple(
        Measurement(
            x.value, VOLUME, float(np.count_nonzero(label_map == x.value)) / voxels_per_ml, ML
        )
        for x in labels
    )
    output = ModelOutput(labels, label_map, measured, quality_issues)
    return Case(source, output)


def phantom_cases(
    ct: tuple[int, int, tuple[float, float, float]],
    mr: tuple[int, int],
    radiograph_size: int,
    voxels_per_ml: float,
    quality_issues: tuple[QualityIssue, ...] = (),
) -> dict[str, Case]:
    """Cases of :func:`labelled_case`: "CT" (the lungs), "MR" (six brain labels) and "CR"
    (the nodule of a MONOCHROME1 radiograph).

    Parameters
    ----------
    ct
        Slices, rows and columns (square), and voxel spacing of the chest CT phantom.
    mr
        Slices and size of the brain MR phantom.
    radiograph_size
        Rows and columns of the chest radiograph.
    voxels_per_ml, quality_issues
        As :func:`labelled_case` takes them.
    """
    slices, size, spacing_mm = ct
    phantom, source = make_ct_series(slices, size, size, spacing_mm=spacing_mm)
    brain = brain_mr_phantom(*mr)
    image = chest_radiograph(radiograph_size, np.random.default_rng(3), "nodule")
    cr = radiograph_to_dataset(image, monochrome1=True)
    brain_names = [f"Brain {v}" for v in range(1, 7)]
    cases = {
        "CT": (source, phantom.labels, ["Right lung", "Left lung"]),
        "MR": (mr_to_datasets(brain), brain.labels, brain_names),
        "CR": ([cr], image.mask[None].astype(np.uint8), ["Nodule"]),
    }
    return {
        name: labelled_case(*case, voxels_per_ml, quality_issues) for name, case in cases.items()
    }
