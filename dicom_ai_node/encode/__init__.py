"""Encode: model results -> DICOM SEG and TID 1500 SR (and, as destinations ask, Secondary
Capture key images, a Key Object Selection, presentation states and a PDF report).

The objects follow the IHE AI Results (AIR) profile: new series in the source study
(same Study Instance UID, patient and study modules copied from the source), the model
named in the equipment modules and Algorithm Identification, deterministic UIDs and
series numbers so a re-encode or re-send of one job is idempotent. No I/O happens here;
:func:`validate_roundtrip` encodes to bytes in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from pydicom.dataset import Dataset

from ..domain import AlgorithmInfo, ModelOutput
from ..errors import EncodeError
from .common import EncodeContext
from .gsps import build_gsps
from .keyimages import SourcePixels, burned_in, key_slices
from .kos import build_kos
from .pdf import build_pdf_report
from .sc import build_key_images
from .seg import build_saliency_seg, build_seg, check_label_map
from .sr import build_findings_sr, build_measurement_sr
from .uids import UID_ROOT, device_uid, result_uid, tracking_uid
from .validate import to_bytes, validate_roundtrip

__all__ = [
    "PROFILE_KINDS",
    "UID_ROOT",
    "SourcePixels",
    "device_uid",
    "encode_profiles",
    "encode_results",
    "result_series_number",
    "result_uid",
    "to_bytes",
    "tracking_uid",
    "validate_roundtrip",
]


def encode_results(
    source: Sequence[Dataset],
    output: ModelOutput,
    algorithm: AlgorithmInfo,
    job_key: str,
    *,
    series_number: int = 9001,
    content_datetime: dt.datetime | None = None,
    revision: int = 0,
    predecessors: Sequence[Dataset] = (),
) -> list[Dataset]:
    """Encode one job's model output as DICOM result objects (IHE AIR; PS3.3 A.51, A.35.13).

    Parameters
    ----------
    source:
        The source series' datasets, sorted exactly like ``output.label_map``'s first
        axis. Pixel data is not read.
    output:
        Labels, label map, measurements and quality issues from the runner.
    algorithm:
        The model; named in Series Description, General and Contributing Equipment,
        Algorithm Identification and the SR's device observer.
    job_key:
        Seeds every UID: the same key gives the same Series, SOP Instance, Tracking and
        Dimension Organization UIDs.
    series_number:
        The model's first result Series Number: revision ``r``'s SEG gets
        :func:`result_series_number`, its SR that ``+ 1`` and its findings SR ``+ 2``,
        whether or not the others exist.
    content_datetime:
        Series and Content Date/Time of every object (also used for Instance Creation
        and Contribution DateTime). Pass a time stored with the job (e.g. when inference
        finished) to make re-encodes byte-identical; ``None`` means now, local time.
    revision:
        The job's revision: 0 for the first results of the model on this study (or
        series), ``n`` for the n-th revision, whose series say "revised n".
    predecessors:
        The SR documents of the job this revision supersedes: each SR names them in its
        Predecessor Documents Sequence (PS3.3 C.17.2.3).

    Returns
    -------
    list[pydicom.Dataset]
        In this order, each only when it has content: the SEG (when the label map has a
        labelled voxel; a FRACTIONAL SEG of the saliency maps instead, when there are
        any; one per image of a series without a Frame of Reference), the measurement
        SR (one geometric group per label with voxels and measurements), the findings SR
        (quality issues and measurements that have no geometry). Each has passed
        :func:`validate_roundtrip`.

    Raises
    ------
    EncodeError
        If the inputs do not fit together or an object fails its round trip.
    """
    ctx = EncodeContext(
        source=source,
        algorithm=algorithm,
        job_key=job_key,
        series_number=result_series_number(series_number, revision),
        content_datetime=content_datetime or dt.datetime.now(),
        revision=revision,
        predecessors=tuple(predecessors),
    )
    _check_measurements(output)
    counts = check_label_map(output, source) if output.label_map is not None else None
    objects: list[Dataset | None] = []
    try:
        if output.saliency:  # a classifier: what drove it, as a FRACTIONAL SEG
            objects += build_saliency_seg(ctx, output)
        if counts is not None:
            if not output.saliency:
                objects += build_seg(ctx, output, counts)
            objects.append(build_measurement_sr(ctx, output, counts))
        objects.append(build_findings_sr(ctx, output, counts))
    except (ValueError, TypeError, AttributeError) as exc:  # highdicom's constructor checks
        raise EncodeError(f"cannot build results of job {job_key}: {exc}") from exc
    results = [ds for ds in objects if ds is not None]
    for ds in results:
        validate_roundtrip(ds)
    return results


#: The kinds :func:`encode_profiles` makes (SEG and SR are :func:`encode_results`'), in
#: the order it makes them: the KOS references the key images.
PROFILE_KINDS = ("SC", "GSPS", "PDF", "KOS")


def encode_profiles(
    kinds: Collection[str],
    source: Sequence[Dataset],
    output: ModelOutput,
    algorithm: AlgorithmInfo,
    job_key: str,
    *,
    series_number: int,
    content_datetime: dt.datetime,
    revision: int = 0,
    predecessors: Sequence[Dataset] = (),
    pixels: SourcePixels | None,
    reports: Sequence[Dataset],
    card_summary: str,
) -> list[Dataset]:
    """Encode the result objects a job's destinations ask for beyond SEG and SR.

    IHE AIR's display-ready forms of one job's result, each in a series of its own in
    the source study (Series Number: :func:`result_series_number` plus the kind's
    ``series_offset``), with the same algorithm identification, Contributing Equipment
    and revision wording as the SEG and SR, and UIDs derived from ``job_key`` (a re-run
    or re-send gives the same objects).

    Parameters
    ----------
    kinds:
        The kinds any of the job's destinations gets (``results``); of these ``SC``,
        ``KOS``, ``GSPS`` and ``PDF`` are made here, the others are ignored.
    source, output, algorithm, job_key, series_number, content_datetime, revision, predecessors:
        As for :func:`encode_results`, with the same values.
    pixels:
        Stored pixel values of source image ``index`` (the source is handed over
        without pixels); ``None`` makes no key images (no SC, and a PDF without a picture).
    reports:
        The job's SR documents (from :func:`encode_results`), which the KOS references
        with the key images (PS3.3 C.17.6).
    card_summary:
        What the PDF report says about the model (its model card, in short).

    Returns
    -------
    list[pydicom.Dataset]
        In this order, each only when asked for and when it has content: the Secondary
        Capture key images (PS3.3 A.8.1; one per finding, or per image of a radiograph),
        the Grayscale Softcopy Presentation States (PS3.3 A.33.1; one per source series),
        the Encapsulated PDF report (PS3.3 A.45.1) and the Key Object Selection document
        (PS3.3 A.35.4) referencing the key images (when SC is asked for too) and
        ``reports``. Each has passed :func:`validate_roundtrip`.

    Raises
    ------
    EncodeError
        If the inputs do not fit together or an object cannot be built.
    """
    wanted = {k.upper() for k in kinds}
    if not wanted & set(PROFILE_KINDS):
        return []
    ctx = EncodeContext(
        source=source,
        algorithm=algorithm,
        job_key=job_key,
        series_number=result_series_number(series_number, revision),
        content_datetime=content_datetime,
        revision=revision,
        predecessors=tuple(predecessors),
    )
    _check_measurements(output)
    out: list[Dataset] = []
    try:
        # the KOS selects only objects that are made and stored: the key images when a
        # destination gets them, and the reports
        key_images = (
            build_key_images(ctx, output, pixels) if pixels is not None and "SC" in wanted else []
        )
        out += key_images
        if "GSPS" in wanted:
            out += build_gsps(ctx, output)
        if "PDF" in wanted:
            pictures = (
                [burned_in(ctx, output, key, pixels) for key in key_slices(output, source)]
                if pixels is not None
                else []
            )
            out.append(build_pdf_report(ctx, output, pictures, card_summary))
        if "KOS" in wanted and (key_images or reports):
            out.append(build_kos(ctx, key_images, reports))
    except (ValueError, TypeError, AttributeError) as exc:  # highdicom's constructor checks
        raise EncodeError(f"cannot build results of job {job_key}: {exc}") from exc
    return out


#: Revisions that get Series Numbers of their own; later ones share the last.
NUMBERED_REVISIONS = 10


def result_series_number(first: int, revision: int) -> int:
    """The SEG Series Number of a revision: ``first + 10 r`` (SR +1, findings SR +2).

    Each (model, revision) has numbers of its own, so a PACS lists the revisions apart;
    revisions from :data:`NUMBERED_REVISIONS` on share the last numbers (their
    descriptions still say which revision they are).
    """
    return first + 10 * min(revision, NUMBERED_REVISIONS - 1)


def _check_measurements(output: ModelOutput) -> None:
    values = {label.value for label in output.labels}
    stray = sorted({m.label_value for m in output.measurements} - values)
    if stray:
        raise EncodeError(f"measurements refer to label values {stray} that no label describes")
