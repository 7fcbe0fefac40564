"""Encode: a Key Object Selection document (PS3.3 A.35.4, PS3.16 TID 2010) that lists a
result's key images and reports, built with highdicom's ``KeyObjectSelectionDocument``.

PACS "key images" lists are filled from KOS documents: this one, titled "Of Interest",
references every Secondary Capture key image (:mod:`.sc`) and every SR report of the
job, says in a Key Object Description which model made them, and names the model as
its device observer (TID 1004).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from ..domain import Code
from ..errors import EncodeError
from .common import EncodeContext, coded, finish
from .uids import result_uid
from .validate import validate_roundtrip

__all__ = ["DOCUMENT_TITLE", "build_kos", "description"]

#: Document Title (PS3.16 CID 7010): what PACS key-image lists select on. None of the
#: other titles of CID 7010 (teaching, conference, quality ...) says "an AI result".
DOCUMENT_TITLE = Code("113000", "DCM", "Of Interest")


def description(ctx: EncodeContext, key_images: int, reports: int) -> str:
    """The Key Object Description (113012, DCM): model, version, revision and contents."""
    parts = [f"{key_images} key image{'s' * (key_images != 1)}"] if key_images else []
    parts += [f"{reports} report{'s' * (reports != 1)}"] if reports else []
    text = f"AI result of {ctx.algorithm.name} {ctx.algorithm.version}"
    if ctx.revision:
        text += f" {'revised' if ctx.predecessors else 'revision'} {ctx.revision}"
    return f"{text}, not for diagnosis: {' and '.join(parts)}"


def build_kos(
    ctx: EncodeContext, key_images: Sequence[Dataset], reports: Sequence[Dataset]
) -> Dataset:
    """Build the Key Object Selection document of one job (PS3.3 A.35.4, C.17.6).

    Parameters
    ----------
    ctx:
        The job's context; the KOS goes into the source study, Series Number
        ``ctx.series_number`` plus the KOS offset of :data:`.kinds.RESULT_KINDS`.
    key_images:
        The job's key images (:func:`.sc.build_key_images`), referenced as IMAGE items.
    reports:
        The job's SR documents, referenced as COMPOSITE items.

    Returns
    -------
    pydicom.Dataset
        The document, through :func:`.validate.validate_roundtrip`: Patient and Study
        copied from the source, the referenced objects in its Current Requested
        Procedure Evidence Sequence, the model in General and Contributing Equipment.

    Raises
    ------
    EncodeError
        If there is nothing to reference, a referenced object is in another study, or
        highdicom refuses the document.
    """
    selected = [*key_images, *reports]
    if not selected:
        raise EncodeError("a key object selection needs at least one key image or report")
    study = str(ctx.source[0].StudyInstanceUID)
    strays = [str(ds.SOPInstanceUID) for ds in selected if str(ds.StudyInstanceUID) != study]
    if strays:
        raise EncodeError(f"objects {strays} are not in the source study {study}")
    when = ctx.content_datetime
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=coded(DOCUMENT_TITLE),
            referenced_objects=selected,
            observer_device_context=_observer(ctx),
            description=description(ctx, len(key_images), len(reports)),
        )
        kos = hd.ko.KeyObjectSelectionDocument(
            evidence=selected,
            content=content,
            **ctx.series_arguments("KOS"),
            sop_instance_uid=result_uid(ctx.job_key, "kos", "instance"),
            instance_number=1,
            contributing_equipment=ctx.equipment(),
            content_date=when.date(),
            content_time=when.time(),
        )
        kos.copy_patient_and_study_information(ctx.source[0])
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot build the key object selection: {exc}") from exc
    finish(kos, ctx)
    validate_roundtrip(kos)
    return kos


def _observer(ctx: EncodeContext) -> hd.sr.ObserverContext:
    """Device observer (PS3.16 TID 1004): the model, as the SR names it."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.algorithm.device_uid,
            name=f"{ctx.algorithm.name} {ctx.algorithm.version}",
            manufacturer_name=ctx.algorithm.manufacturer,
            model_name=ctx.algorithm.name,
        ),
    )
