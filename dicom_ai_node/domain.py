"""Core: the values every stage shares: enums, series summaries, model specs and results.

Nothing here does I/O or imports pynetdicom, highdicom or torch, so every stage can
depend on it. Names follow DICOM keywords (PS3.6) in snake_case.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .domain_jobs import DeliveryState, JobInput, JobState, PlannedJob, PriorJob, Step

__all__ = [
    "AlgorithmInfo",
    "AssociationOutcome",
    "AssociationSummary",
    "BodyPart",
    "Code",
    "DeliveryState",
    "InputSpec",
    "JobInput",
    "JobState",
    "Measurement",
    "ModelOutput",
    "OutputLabel",
    "PlannedJob",
    "PriorJob",
    "QualityIssue",
    "Scope",
    "SeriesInfo",
    "SeriesSelection",
    "SeriesState",
    "Step",
    "Volume",
    "expected_count_reached",
    "parse_enum",
]


E = TypeVar("E", bound=enum.Enum)


def parse_enum(cls: type[E], value: str | E) -> E:
    """Convert ``value`` to ``cls`` and name the allowed values when it does not fit.

    Parameters
    ----------
    cls:
        The enumeration.
    value:
        A member, or its value as a string (case-insensitive).

    Returns
    -------
    E
        The member.

    Raises
    ------
    ValueError
        If ``value`` names no member.
    """
    if isinstance(value, cls):
        return value
    text = str(value).strip()
    for member in cls:
        if str(member.value).lower() == text.lower() or member.name.lower() == text.lower():
            return member
    allowed = ", ".join(str(m.value) for m in cls)
    raise ValueError(f"{value!r} is not a valid {cls.__name__}; allowed: {allowed}")


class SeriesState(enum.StrEnum):
    """Where a series is in the pipeline (see docs/architecture.md)."""

    RECEIVING = "receiving"  # instances arriving, quiet period running
    COMPLETE = "complete"  # quiet period over or expected count reached, not yet routed
    WAITING = "waiting"  # rules for each series applied; waiting for the study to be quiet
    ROUTED = "routed"  # a job runs on it
    NOT_ROUTED = "not_routed"  # no rule wants it, or another series won; the reason says


def expected_count_reached(instance_count: int, expected_count: int | None) -> bool:
    """Whether a series holds the instances its sender announced.

    The announced count is NumberOfSeriesRelatedInstances (0020,1209; PS3.3 C.7.3.1,
    PS3.4 C.3.3); not announced, it never decides. The one rule both the index (at the
    instance that reaches it) and the completion sweep apply.
    """
    return expected_count is not None and instance_count >= expected_count


class AssociationOutcome(enum.StrEnum):
    """How an association with the listener ended (or why it never began)."""

    COMPLETED = "completed"  # released by the peer (PS3.8 7.2)
    ABORTED = "aborted"  # A-ABORT, A-P-ABORT, a timeout or the connection lost
    REJECTED = "rejected"  # A-ASSOCIATE-RJ: unknown caller, wrong called AE, no room, ...
    REFUSED = "refused"  # closed before an association: no valid request, TLS failed, full


@dataclass(frozen=True)
class AssociationSummary:
    """One association as it ended, or a connection refused before it became one.

    Titles are empty when the connection sent no A-ASSOCIATE-RQ; ``instances`` counts
    the C-STOREs answered Success; ``reason`` says why it was rejected, refused or
    aborted (empty when completed). No patient data: titles, address and counts only.
    """

    calling_ae_title: str
    called_ae_title: str
    address: str
    instances: int
    outcome: AssociationOutcome
    reason: str
    started_at: dt.datetime
    ended_at: dt.datetime


class Scope(enum.StrEnum):
    """What a model consumes: one series, or every complete series of the study."""

    SERIES = "series"
    STUDY = "study"


class SeriesSelection(enum.StrEnum):
    """Which matching series of a study a rule's model runs on (docs/routing.md).

    ``best``: one job per study, on the best matching series, decided once the study is
    quiet. ``each``: one job per matching series (each radiograph view, each still),
    decided as soon as that series is complete.
    """

    BEST = "best"
    EACH = "each"


class BodyPart(enum.StrEnum):
    """Normalised body regions used for routing (values of BodyPartExamined, PS3.16 Annex L)."""

    HEAD = "HEAD"
    NECK = "NECK"
    CHEST = "CHEST"
    BREAST = "BREAST"
    ABDOMEN = "ABDOMEN"
    PELVIS = "PELVIS"
    HEART = "HEART"
    SPINE = "SPINE"
    UPPER_EXTREMITY = "UPPER_EXTREMITY"
    LOWER_EXTREMITY = "LOWER_EXTREMITY"
    WHOLEBODY = "WHOLEBODY"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 Table 8.8-1): value, coding scheme designator, meaning."""

    value: str
    scheme_designator: str
    meaning: str


@dataclass(frozen=True)
class SeriesInfo:
    """What routing needs to know about one series, taken from its headers.

    ``header`` holds the top-level attributes of the first instance (keyword -> value, as
    str, int, float or tuple) so rules can match on any DICOM keyword.
    """

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    sop_class_uids: frozenset[str]
    number_of_instances: int
    calling_ae_title: str = ""
    body_part_examined: str = ""
    study_description: str = ""
    series_description: str = ""
    protocol_name: str = ""
    anatomic_region_codes: tuple[Code, ...] = ()
    image_type: tuple[str, ...] = ()
    slice_thickness: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    image_orientation_patient: tuple[float, ...] | None = None
    number_of_frames: int = 1
    header: Mapping[str, Any] = field(default_factory=dict)

    @property
    def number_of_slices(self) -> int:
        """Slices in the series: instances, or frames of a multi-frame instance."""
        return max(self.number_of_instances, self.number_of_frames)

    @property
    def is_axial(self) -> bool | None:
        """Whether the slice normal is within 10 degrees of the patient z axis (PS3.3 C.7.6.2.1.1).

        Returns ``None`` when ImageOrientationPatient is absent.
        """
        iop = self.image_orientation_patient
        if iop is None or len(iop) != 6:
            return None
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        normal = np.cross(row, col)
        norm = float(np.linalg.norm(normal))
        if norm == 0:
            return None
        return bool(abs(normal[2]) / norm >= math.cos(math.radians(10)))


@dataclass(frozen=True)
class InputSpec:
    """What a model accepts; the router checks a series against it before routing.

    All constraints are optional; ``None`` or empty means "any".
    """

    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[BodyPart] = frozenset()
    sop_class_uids: frozenset[str] = frozenset()
    min_slices: int | None = None
    max_slices: int | None = None
    slice_thickness_mm: tuple[float, float] | None = None
    require_axial: bool = False
    require_original: bool = False
    require_pixel_spacing: bool = False
    scope: Scope = Scope.SERIES


@dataclass(frozen=True)
class OutputLabel:
    """One output class of a model with the codes used in SEG and SR (PS3.3 C.8.20.2).

    ``value`` is the integer label in the model's label map (1-based).
    """

    value: int
    name: str
    category: Code
    type: Code
    color_rgb: tuple[int, int, int]
    laterality: Code | None = None
    #: Measurements of this label (``volume``, ``long_axis``, ``mean_hu``); empty: the
    #: model's own list.
    measurements: tuple[str, ...] = ()
    #: Report each connected region of this label on its own (a lesion label: one SEG
    #: segment and one SR group per nodule), see :mod:`dicom_ai_node.infer.findings.lesions`.
    instances: bool = False
    #: Where the finding is (TID 1419 Finding Site), when it is not the label itself.
    finding_site: Code | None = None


@dataclass(frozen=True)
class Measurement:
    """A numeric measurement of one label (TID 300): e.g. the volume of the left lung."""

    label_value: int
    concept: Code
    value: float
    unit: Code
    #: How the value was derived from the region, e.g. Mean (373098007, SCT); PS3.16 CID 7464.
    derivation: Code | None = None


@dataclass(frozen=True)
class QualityIssue:
    """One failed input check; ``blocking`` issues stop inference."""

    check: str
    message: str
    blocking: bool = True


@dataclass(frozen=True)
class Volume:
    """A series as a 3-D array in patient geometry, slices sorted along the normal.

    Attributes
    ----------
    voxels:
        (slices, rows, columns) float32, rescaled (HU for CT).
    spacing_mm:
        (slice spacing, row spacing, column spacing) in mm.
    sop_instance_uids:
        The SOP Instance UID of each slice, in ``voxels`` order.
    phases:
        Frames per slice position of a cine series: ``voxels`` holds each position's
        ``phases`` frames in time order, positions along the normal (so ``slices`` is
        positions x phases, and ``spacing_mm[0]`` the distance between positions); 1
        for everything else.
    image_orientation_patient:
        The series' Image Orientation (Patient): the row and column direction cosines in
        the patient coordinate system (LPS, PS3.3 C.7.6.2.1.1), the same for every slice;
        ``None`` when the images state none (projection images).
    """

    voxels: npt.NDArray[np.float32]
    spacing_mm: tuple[float, float, float]
    sop_instance_uids: tuple[str, ...]
    frame_of_reference_uid: str
    series_instance_uid: str
    study_instance_uid: str
    phases: int = 1
    image_orientation_patient: tuple[float, ...] | None = None

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm3."""
        return float(np.prod(self.spacing_mm))


@dataclass(frozen=True)
class Evaluation:
    """A coded qualitative evaluation of a label (TID 1501/1410 row, PS3.16), e.g.
    Normality (121402, DCM) = Abnormal (263654008, SCT)."""

    label_value: int
    concept: Code
    value: Code


@dataclass(frozen=True)
class ModelOutput:
    """What a runner returns after post-processing, ready for the encoders.

    ``label_map`` has the shape of the input :class:`Volume` (uint8, 0 = background) or is
    ``None`` for models without a segmentation. A classifier's label map holds the region
    that drove a positive finding (where its saliency is at least half its maximum).
    ``saliency`` maps label values to float32 maps of the volume's shape in 0..1 (what
    drove the label's probability); encoded as a FRACTIONAL SEG (PS3.3 C.8.20.2.3).
    """

    labels: tuple[OutputLabel, ...]
    label_map: npt.NDArray[np.uint8] | None = None
    measurements: tuple[Measurement, ...] = ()
    quality_issues: tuple[QualityIssue, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()
    saliency: Mapping[int, npt.NDArray[np.float32]] = field(default_factory=dict)


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identification of the model that made a result (TID 4019, PS3.16; PS3.3 C.7.5.1).

    ``device_uid`` is fixed per model name and version and goes into Contributing
    Equipment as Device UID so results can be traced to the exact model.
    """

    name: str
    version: str
    family: Code
    device_uid: str
    manufacturer: str = "dicom-ai-node"
    intended_use: str = ""
