"""Encode: a revision's objects have Series Numbers and descriptions of their own, its SR names
its predecessor (PS3.3 C.17.2.3), and every object carries the node's identity, by which the
node recognises it when a PACS forwards it back."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import AlgorithmInfo, Code, Measurement, ModelOutput, OutputLabel
from dicom_ai_node.encode import encode_results, result_series_number
from dicom_ai_node.errors import EncodeError
from dicom_ai_node.identity import MANUFACTURER, device_uid, made_by_node
from dicom_ai_node.route.header import header_of
from dicom_ai_node.testing.series import make_ct_series

ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
LUNG = OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), (220, 120, 80))
LENGTH = Code("103339001", "SCT", "Long Axis")
MM = Code("mm", "UCUM", "millimeter")
ALGORITHM = AlgorithmInfo(
    name="ct-chest-lungs",
    version="2.0.0",
    family=Code("123110", "DCM", "Artificial Intelligence"),
    device_uid=device_uid("ct-chest-lungs", "2.0.0"),
    manufacturer=MANUFACTURER,
)
WHEN = dt.datetime(2026, 12, 7, 9, 0, 0)


@pytest.fixture(scope="module")
def source() -> list[Dataset]:
    return make_ct_series(20, 64, 64, spacing_mm=(5.0, 5.0, 5.0))[1]


def encode(source: list[Dataset], key: str, **kwargs: object) -> list[Dataset]:
    label_map = np.zeros((len(source), 64, 64), np.uint8)
    label_map[5:12, 20:40, 20:40] = 1
    output = ModelOutput(
        labels=(LUNG,), label_map=label_map, measurements=(Measurement(1, LENGTH, 12.5, MM),)
    )
    return encode_results(
        source, output, ALGORITHM, key, series_number=9100, content_datetime=WHEN, **kwargs
    )


def test_each_revision_has_its_own_series_numbers_and_says_revised(source: list[Dataset]) -> None:
    first = encode(source, "k/r0")
    assert [ds.SeriesNumber for ds in first] == [9100, 9101]
    assert [ds.SeriesDescription for ds in first] == [
        "AI ct-chest-lungs 2.0.0 SEG",
        "AI ct-chest-lungs 2.0.0 SR",
    ]
    second = encode(source, "k/r2", revision=2, predecessors=[first[1]])
    assert [ds.SeriesNumber for ds in second] == [9120, 9121]
    assert [ds.SeriesDescription for ds in second] == [
        "AI ct-chest-lungs 2.0.0 SEG revised 2",
        "AI ct-chest-lungs 2.0.0 SR revised 2",
    ]
    assert second[0].ContentDescription == "AI ct-chest-lungs 2.0.0 segmentation revised 2"
    assert {ds.SeriesInstanceUID for ds in first}.isdisjoint(ds.SeriesInstanceUID for ds in second)
    replacing_nothing = encode(source, "k/r1", revision=1)  # e.g. its predecessor failed
    assert replacing_nothing[1].SeriesDescription == "AI ct-chest-lungs 2.0.0 SR revision 1"
    assert result_series_number(9100, 9) == 9190 == result_series_number(9100, 25)


def test_a_revisions_sr_names_its_predecessor(source: list[Dataset]) -> None:
    first = encode(source, "k/r0")
    assert "PredecessorDocumentsSequence" not in first[1]
    revised = encode(source, "k/r1", revision=1, predecessors=[first[1]])[1]
    (study,) = revised.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == first[1].StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first[1].SeriesInstanceUID
    (item,) = series.ReferencedSOPSequence
    assert item.ReferencedSOPInstanceUID == first[1].SOPInstanceUID
    assert item.ReferencedSOPClassUID == first[1].SOPClassUID


def test_results_carry_the_identity_the_node_recognises(source: list[Dataset]) -> None:
    for ds in encode(source, "k/r0"):
        assert made_by_node(header_of(ds)) == "ct-chest-lungs 2.0.0"
        (item,) = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == MANUFACTURER]
        assert item.DeviceSerialNumber == ds.DeviceUID
    assert made_by_node(header_of(source[0])) is None
    spoofed = header_of(source[0]) | {"Manufacturer": MANUFACTURER}
    assert made_by_node(spoofed) is None
    spoofed |= {"ManufacturerModelName": "x", "SoftwareVersions": "1", "DeviceUID": "1.2.3"}
    assert made_by_node(spoofed) is None


def test_a_negative_revision_is_refused(source: list[Dataset]) -> None:
    with pytest.raises(EncodeError, match="revision -1"):
        encode(source, "k", revision=-1)
