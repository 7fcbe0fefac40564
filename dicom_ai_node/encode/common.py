"""Encode: what SEG and SR share: the job context, codes, equipment and algorithm ids.

The result objects identify the model three ways, as the IHE AI Results profile asks:
the General Equipment module (PS3.3 C.7.5.1: Manufacturer, Manufacturer's Model Name =
model name, Software Versions = model version, Device UID), a Contributing Equipment
item (PS3.3 C.12.1, Table C.12-1: Purpose of Reference "Processing Equipment") and Algorithm
Identification (PS3.16 TID 4019) in every segment and measurement group.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DT

from ..domain import AlgorithmInfo, Code
from ..errors import EncodeError
from ..result_kinds import RESULT_KINDS
from .uids import result_uid

__all__ = [
    "LONG_STRING_MAX",
    "EncodeContext",
    "coded",
    "finish",
]

#: Manufacturer's Model Name of the Contributing Equipment item highdicom adds for itself.
_HIGHDICOM = "highdicom"

#: Maximum length of an LO (Long String) value, PS3.5 Table 6.2-1.
LONG_STRING_MAX = 64


def coded(code: Code) -> hd.sr.CodedConcept:
    """Convert a domain :class:`~dicom_ai_node.domain.Code` to highdicom (PS3.3 Table 8.8-1)."""
    return hd.sr.CodedConcept(
        value=code.value, scheme_designator=code.scheme_designator, meaning=code.meaning
    )


def _limit(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "~"


@dataclass(frozen=True)
class EncodeContext:
    """Everything one job's result objects share.

    Attributes
    ----------
    source:
        The source series, sorted like the label map's first axis.
    algorithm:
        The model that made the result.
    job_key:
        Seeds every UID (see :mod:`dicom_ai_node.encode.uids`).
    series_number:
        Series Number of the SEG; the SR gets +1, the findings SR +2.
    content_datetime:
        Series, Content and Instance Creation Date/Time and Contribution DateTime of
        every object, so the same inputs give byte-identical objects.
    revision:
        0 for a model's first results on a study (or series); n for the n-th revision,
        which says "revised n" in its descriptions when it replaces earlier reports.
    predecessors:
        The SR documents this revision supersedes (PS3.3 C.17.2.3 Predecessor Documents
        Sequence), headers only.
    """

    source: Sequence[Dataset]
    algorithm: AlgorithmInfo
    job_key: str
    series_number: int
    content_datetime: dt.datetime
    revision: int = 0
    predecessors: Sequence[Dataset] = ()

    def __post_init__(self) -> None:
        if not self.source:
            raise EncodeError("no source instances to encode results for")
        if not self.job_key:
            raise EncodeError("job_key must not be empty")
        if not 1 <= self.series_number <= 2**31 - 3:
            raise EncodeError(f"series_number {self.series_number} out of range (IS)")
        if self.revision < 0:
            raise EncodeError(f"revision {self.revision} is negative")
        uids = {str(ds.StudyInstanceUID) for ds in self.source}
        if len(uids) != 1:
            raise EncodeError(f"source spans {len(uids)} studies; results go into one study")

    def series_description(self, kind: str) -> str:
        """Series Description naming the model, version and revision.

        E.g. ``AI lungs 1.0.0 SEG``, and ``AI lungs 1.0.0 SEG revised 1`` for the first
        revision that replaces earlier reports, so that a PACS worklist tells the current
        results from earlier ones; a revision that replaces none (its predecessor made no
        report, or it could not analyse its input) says ``revision 1``.
        """
        text = f"AI {self.algorithm.name} {self.algorithm.version} {kind}"
        if self.revision:
            text += f" {'revised' if self.predecessors else 'revision'} {self.revision}"
        return _limit(text, LONG_STRING_MAX)

    def equipment(self) -> list[hd.ContributingEquipment]:
        """Contributing Equipment Sequence item of the model (PS3.3 C.12.1, Table C.12-1).

        Purpose of Reference is Processing Equipment (109102, DCM; CID 7005): the model
        processed the source instances into new ones (Modifying Equipment, 109103, is
        for equipment that changed existing instances). Device UID is not an attribute
        of this item (dciodvfy flags it), so the model's Device UID is its Device Serial
        Number here, and Device UID proper is in General Equipment (see :func:`finish`).
        """
        item = hd.ContributingEquipment(
            manufacturer=self.algorithm.manufacturer,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=self.algorithm.name,
            software_versions=self.algorithm.version,
            device_serial_number=self.algorithm.device_uid,
            contribution_datetime=self.content_datetime,
            contribution_description=_limit(f"AI inference: {self.algorithm.name}", 1024),
        )
        return [item]

    def series_arguments(self, kind: str) -> dict[str, Any]:
        """What every highdicom constructor of a ``kind`` result takes alike: its series
        (deterministic UID, the kind's Series Number in the revision's block, description,
        date and time) and the General Equipment naming the model (PS3.3 C.7.3.1, C.7.5.1).
        """
        when = self.content_datetime
        return {
            "series_instance_uid": result_uid(self.job_key, kind.lower(), "series"),
            "series_number": self.series_number + RESULT_KINDS[kind].series_offset,
            "series_description": self.series_description(kind),
            "series_date": when.date(),
            "series_time": when.time(),
            "manufacturer": self.algorithm.manufacturer,
            "manufacturer_model_name": self.algorithm.name,
            "software_versions": self.algorithm.version,
            "device_serial_number": self.algorithm.device_uid,
        }

    def algorithm_sequence(self) -> hd.AlgorithmIdentificationSequence:
        """Segment Algorithm Identification (PS3.3 C.8.20.2, TID 4019 attributes)."""
        return hd.AlgorithmIdentificationSequence(
            name=self.algorithm.name,
            family=coded(self.algorithm.family),
            version=self.algorithm.version,
            source=self.algorithm.manufacturer,
        )

    def algorithm_id(self) -> hd.sr.AlgorithmIdentification:
        """Algorithm Identification content items (PS3.16 TID 4019)."""
        return hd.sr.AlgorithmIdentification(
            name=self.algorithm.name,
            version=self.algorithm.version,
            family=coded(self.algorithm.family),
            manufacturer=self.algorithm.manufacturer,
        )


def finish(ds: Dataset, ctx: EncodeContext) -> None:
    """Set what highdicom's constructors cannot: Device UID and the wall-clock times.

    * Device UID (0018,1002) of the General Equipment module (PS3.3 C.7.5.1), which
      identifies the model version; highdicom has no parameter for it.
    * Instance Creation Date/Time (PS3.3 C.12.1) and the Contribution DateTime of the
      Contributing Equipment item highdicom adds for itself: highdicom stamps them with
      the wall clock; pinning them to the content date/time makes two encodings of one
      job byte-identical.

    These are the only edits after construction, besides the Dimension Organization UID
    in :func:`dicom_ai_node.encode.seg.build_seg`.
    """
    when = ctx.content_datetime
    ds.DeviceUID = ctx.algorithm.device_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S.%f")
    for item in ds.get("ContributingEquipmentSequence", []):
        if item.get("ManufacturerModelName") == _HIGHDICOM and "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
