"""Encode: the kinds a job's destinations ask for beyond SEG and SR, and only those: each in
its kind's series of the revision, deterministic, and nothing extra when none is asked."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import Measurement, ModelOutput
from dicom_ai_node.encode import (
    PROFILE_KINDS,
    encode_profiles,
    encode_results,
    result_series_number,
)
from dicom_ai_node.infer.findings.measure import ML, VOLUME
from dicom_ai_node.result_kinds import RESULT_KINDS
from dicom_ai_node.testing.series import make_ct_series

from .encode_cases import LABELS, algorithm
from .encode_cases import LATER as WHEN

ALGORITHM = algorithm("lungs", "1.0.0")


def _kind(ds: Dataset) -> str:
    return next(k.name for k in RESULT_KINDS.values() if ds.SOPClassUID in k.sop_class_uids)


def _encode(kinds: set[str], revision: int = 0) -> list[Dataset]:
    phantom, source = make_ct_series(8, 48, 48, spacing_mm=(5.0, 5.0, 5.0), seed=3)
    label_map = (phantom.labels == 1).astype(np.uint8)
    output = ModelOutput(
        labels=LABELS[:1],
        label_map=label_map,
        measurements=(Measurement(1, VOLUME, float(label_map.sum()) * 0.125, ML),),
    )
    common = {"series_number": 700, "content_datetime": WHEN, "revision": revision}
    reports = [
        ds
        for ds in encode_results(source, output, ALGORITHM, "job/1", **common)  # type: ignore[arg-type]
        if _kind(ds) == "SR"
    ]
    return encode_profiles(
        kinds,
        source,
        output,
        ALGORITHM,
        "job/1",
        pixels=lambda i: source[i].pixel_array,
        reports=reports,
        card_summary="lungs 1.0.0. Research only.",
        **common,  # type: ignore[arg-type]
    )


def test_nothing_beyond_seg_and_sr_unless_asked() -> None:
    assert _encode({"SEG", "SR"}) == []


@pytest.mark.parametrize("revision", [0, 1])
def test_each_kind_asked_for_in_its_own_series(revision: int) -> None:
    made = _encode(set(PROFILE_KINDS), revision)
    assert {_kind(ds) for ds in made} == set(PROFILE_KINDS)
    assert _kind(made[-1]) == "KOS"  # made last: it selects the key images
    first = result_series_number(700, revision)
    for ds in made:
        assert int(ds.SeriesNumber) == first + RESULT_KINDS[_kind(ds)].series_offset
        assert ("revision 1" in ds.SeriesDescription) == (revision == 1)
    again = _encode(set(PROFILE_KINDS), revision)
    assert [ds.SOPInstanceUID for ds in again] == [ds.SOPInstanceUID for ds in made]


def test_only_the_kinds_asked_for() -> None:
    assert {_kind(ds) for ds in _encode({"sc", "PDF"})} == {"SC", "PDF"}
    kos_only = _encode({"KOS", "SR"})  # no SC made: the KOS selects the reports only
    assert [_kind(ds) for ds in kos_only] == ["KOS"]
