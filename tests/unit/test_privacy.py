"""Privacy stage: PS3.15 Basic Profile on real and synthetic data, and results mapped back."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_ai_node.domain import AlgorithmInfo, Code, Measurement, ModelOutput, OutputLabel
from dicom_ai_node.encode import device_uid, encode_results
from dicom_ai_node.errors import ConfigError, PrivacyError
from dicom_ai_node.infer.findings.measure import ML, VOLUME
from dicom_ai_node.privacy import (
    DEIDENTIFICATION_MARKERS,
    Action,
    StudyMapping,
    deidentify,
    load_or_create_secret,
    load_table,
    reidentify,
    secret_file_path,
)
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.files import valid_uid
from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
    make_ct_series,
    phantom_to_datasets,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
#: Made-up identifying values planted in the synthetic series (besides testing/series.py's).
PLANTED = {
    "InstitutionName": "CANARY INSTITUTE QX",
    "InstitutionAddress": "CANARY STREET 9",
    "ReferringPhysicianName": "CANARYREF^DOCQ",
    "PerformingPhysicianName": "CANARYPERF^DOCZ",
    "OperatorsName": "CANARYOPS^TECHW",
    "IssuerOfPatientID": "CANARYISSUERQ",
    "StudyDescription": "CANARY STUDY DESCRIPTION",
    "AdditionalPatientHistory": "CANARY HISTORY TEXT",
    "OtherPatientNames": "CANARYOTHER^NAMEQ",
}
DEVICE = {"StationName": "CANARYSTN7", "DeviceSerialNumber": "SNCANARY42"}
PATIENT = [CANARY_PATIENT_ID, *CANARY_PATIENT_NAME.split("^"), CANARY_BIRTH_DATE, "ACC0001"]
CANARIES = [
    *PATIENT,
    *PLANTED.values(),
    "CANARY PRIVATE",
    "CANARY OVERLAY",
    "CANARY CURVE",
    "CANARYAET",
]
DEVICE_UID = "1.2.826.0.1.3680043.10.1453.999.1"


def _plant(ds: Dataset, previous: Dataset | None) -> Dataset:
    for keyword, value in {**PLANTED, **DEVICE}.items():
        setattr(ds, keyword, value)
    ds.DeviceUID = DEVICE_UID
    ds.file_meta.SourceApplicationEntityTitle = "CANARYAET"
    other = Dataset()
    other.PatientID = CANARY_PATIENT_ID + "-OLD"
    ds.OtherPatientIDsSequence = Sequence([other])
    block = ds.private_block(0x0009, "CANARY CREATOR", create=True)
    block.add_new(0x01, "LO", "CANARY PRIVATE VALUE")
    ds.add_new(0x60000010, "US", 4)  # Overlay Rows ... a whole overlay plane
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000022, "LO", "CANARY OVERLAY LABEL")
    ds.add_new(0x60003000, "OW", b"\x00\x00")
    ds.add_new(0x50002500, "LO", "CANARY CURVE LABEL")
    if previous is not None:  # a reference to the slice before, as derived images have
        ref = Dataset()
        ref.ReferencedSOPClassUID = previous.SOPClassUID
        ref.ReferencedSOPInstanceUID = previous.SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([ref])
    return ds


def _study() -> list[list[Dataset]]:
    """Two series of one study and frame of reference, with identifying values planted."""
    _, first = make_ct_series(12, 64, 64, spacing_mm=(12.5, 5.6, 5.6))
    second = phantom_to_datasets(
        make_ct_series(4, 16, 16, seed=1)[0],
        seed=1,
        study_instance_uid=first[0].StudyInstanceUID,
        series_description="CT LOWRES",
    )
    for ds in second:
        ds.FrameOfReferenceUID = first[0].FrameOfReferenceUID
        ds.SeriesNumber = 3
    out = []
    for series in (first, second):
        out.append([_plant(ds, series[i - 1] if i else None) for i, ds in enumerate(series)])
    return out


@pytest.fixture(scope="module")
def study() -> list[list[Dataset]]:
    return _study()


def _run(
    study: list[list[Dataset]], retain_uids: bool = False, retain_device: bool = False
) -> tuple[StudyMapping, list[list[Dataset]]]:
    mapping = StudyMapping(SECRET)
    out = [
        [
            deidentify(ds, retain_uids=retain_uids, retain_device=retain_device, mapping=mapping)
            for ds in series
        ]
        for series in study
    ]
    return mapping, out


@pytest.fixture(scope="module")
def basic(study: list[list[Dataset]]) -> tuple[StudyMapping, list[list[Dataset]]]:
    return _run(study)


def _walk(ds: Dataset) -> Iterator[pydicom.DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _leaks(ds: Dataset, values: list[str]) -> list[str]:
    """Values found in any element at any depth (text, or bytes) or in the encoded file."""
    raw = _to_bytes(ds)
    found = [v for v in values if v.encode() in raw]
    for elem in _walk(ds):
        if elem.VR != "SQ" and elem.value is not None:
            text = elem.value if isinstance(elem.value, bytes) else str(elem.value).encode()
            found += [f"{v} in {elem.tag}" for v in values if v.encode() in text]
    return found


def test_table_covers_the_identifying_attributes() -> None:
    table = load_table()
    assert len(table) >= 540
    expected = {
        "PatientName": ("Z", None, None),
        "PatientID": ("Z", None, None),
        "PatientBirthDate": ("Z", None, None),
        "AccessionNumber": ("Z", None, None),
        "InstitutionName": ("X/Z/D", None, None),
        "ReferringPhysicianName": ("Z", None, None),
        "OperatorsName": ("X/Z/D", None, None),
        "StationName": ("X/Z/D", None, "K"),
        "DeviceSerialNumber": ("X/Z/D", None, "K"),
        "DeviceUID": ("U", "K", "K"),
        "StudyInstanceUID": ("U", "K", None),
        "SeriesInstanceUID": ("U", "K", None),
        "SOPInstanceUID": ("U", "K", None),
        "FrameOfReferenceUID": ("U", "K", None),
        "ReferencedSOPInstanceUID": ("U", "K", None),
        "OtherPatientIDsSequence": ("X", None, None),
        "SourceImageSequence": ("X/Z/U*", "K", None),
    }
    by_keyword = {row.keyword: row for row in table.rows.values()}
    for keyword, (basic, uids, device) in expected.items():
        row = by_keyword[keyword]
        assert (row.basic, row.retain_uids, row.retain_device) == (basic, uids, device), keyword
    for tag, row in table.rows.items():  # keywords agree with pydicom's dictionary
        assert keyword_for_tag(tag) in ("", row.keyword), hex(tag)


def test_no_identifying_value_survives(basic: tuple[StudyMapping, list[list[Dataset]]]) -> None:
    for series in basic[1]:
        for ds in series:
            assert _leaks(ds, [*CANARIES, *DEVICE.values(), DEVICE_UID, "20260101"]) == []


def test_input_is_never_modified(study: list[list[Dataset]]) -> None:
    fresh = _study()[0][0]
    before = _to_bytes(fresh)
    deidentify(fresh, retain_uids=False, retain_device=False, mapping=StudyMapping(SECRET))
    assert _to_bytes(fresh) == before
    assert fresh.PatientName == CANARY_PATIENT_NAME


def test_private_overlay_and_curve_groups_are_removed(
    basic: tuple[StudyMapping, list[list[Dataset]]],
) -> None:
    ds = basic[1][0][3]
    assert not any(e.tag.is_private for e in _walk(ds))
    assert not [e.tag for e in ds if 0x5000 <= e.tag.group <= 0x60FF]
    assert "OtherPatientIDsSequence" not in ds and "AdditionalPatientHistory" not in ds


def test_uids_are_replaced_consistently(
    study: list[list[Dataset]], basic: tuple[StudyMapping, list[list[Dataset]]]
) -> None:
    mapping, out = basic
    originals = {ds.SOPInstanceUID for series in study for ds in series}
    new = [ds.SOPInstanceUID for series in out for ds in series]
    assert len(set(new)) == len(new) and not originals & set(new)
    for series, source in zip(out, study, strict=True):
        assert len({ds.SeriesInstanceUID for ds in series}) == 1
        assert series[0].SeriesInstanceUID == mapping.uids[source[0].SeriesInstanceUID]
        for i, ds in enumerate(series[1:], start=1):  # references follow the instances
            assert (
                ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
                == series[i - 1].SOPInstanceUID
            )
    everything = [ds for series in out for ds in series]
    assert len({ds.StudyInstanceUID for ds in everything}) == 1
    assert len({ds.FrameOfReferenceUID for ds in everything}) == 1  # shared by both series
    assert everything[0].StudyInstanceUID == mapping.pseudonymous_study_uid
    for ds in everything:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.DeviceUID):
            assert valid_uid(uid) and uid.startswith("2.25.")
    assert mapping.uid_keywords[study[0][0].FrameOfReferenceUID] == "FrameOfReferenceUID"


def test_retain_uids_keeps_them(study: list[list[Dataset]]) -> None:
    mapping, out = _run(study, retain_uids=True)
    for series, source in zip(out, study, strict=True):
        for ds, original in zip(series, source, strict=True):
            assert ds.SOPInstanceUID == original.SOPInstanceUID
            assert ds.StudyInstanceUID == original.StudyInstanceUID
            assert ds.DeviceUID == DEVICE_UID
            assert _leaks(ds, PATIENT) == []
    assert mapping.pseudonymous_study_uid == study[0][0].StudyInstanceUID
    codes = [item.CodeValue for item in out[0][0].DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110"]


@pytest.mark.parametrize("retain_device", [False, True])
def test_device_identity_follows_the_option(
    study: list[list[Dataset]], retain_device: bool
) -> None:
    _, out = _run([study[0][:2]], retain_device=retain_device)
    ds = out[0][0]
    if retain_device:
        assert (ds.StationName, ds.DeviceSerialNumber) == tuple(DEVICE.values())
        assert ds.DeviceUID == DEVICE_UID
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113109"]
    else:
        assert _leaks(ds, [*DEVICE.values(), DEVICE_UID]) == []
    assert ds.InstitutionName == "ANONYMIZED"  # institution identity is not device identity
    assert ds.Manufacturer == study[0][0].Manufacturer  # not in Table E.1-1: kept


def test_markers_say_what_was_done(basic: tuple[StudyMapping, list[list[Dataset]]]) -> None:
    ds = basic[1][0][0]
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.DeidentificationMethod == "PS3.15 E Basic"
    (item,) = ds.DeidentificationMethodCodeSequence
    assert (item.CodeValue, item.CodingSchemeDesignator) == ("113100", "DCM")
    assert ds.PatientID.startswith("ANON") and str(ds.PatientName).startswith("ANONYMIZED^")
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.StudyID == ""


def test_output_round_trips_with_pixels_untouched(
    study: list[list[Dataset]], basic: tuple[StudyMapping, list[list[Dataset]]]
) -> None:
    for ds, original in zip(basic[1][0], study[0], strict=True):
        back = pydicom.dcmread(io.BytesIO(_to_bytes(ds)))
        assert back.PixelData == original.PixelData
        assert np.array_equal(back.pixel_array, original.pixel_array)
        assert back.SOPInstanceUID == ds.SOPInstanceUID


def test_same_secret_same_output_other_secret_other(
    study: list[list[Dataset]], basic: tuple[StudyMapping, list[list[Dataset]]]
) -> None:
    again = deidentify(
        study[0][0], retain_uids=False, retain_device=False, mapping=StudyMapping(SECRET)
    )
    assert _to_bytes(again) == _to_bytes(basic[1][0][0])
    other = deidentify(
        study[0][0], retain_uids=False, retain_device=False, mapping=StudyMapping(OTHER_SECRET)
    )
    assert other.SOPInstanceUID != again.SOPInstanceUID and other.PatientID != again.PatientID


def test_pseudonym_links_the_studies_of_one_patient_only() -> None:
    def first_instance(patient_id: str, seed: int) -> Dataset:
        _, series = make_ct_series(2, 8, 8, seed=seed, patient_id=patient_id)
        return deidentify(
            series[0], retain_uids=False, retain_device=False, mapping=StudyMapping(SECRET)
        )

    a, b = first_instance(CANARY_PATIENT_ID, 0), first_instance(CANARY_PATIENT_ID, 5)
    other = first_instance("SOMEONEELSE1", 0)
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert (a.PatientID, a.PatientName) == (b.PatientID, b.PatientName)
    assert other.PatientID != a.PatientID


_VALUES: dict[str, object] = {
    "SQ": Sequence([Dataset()]),
    "AT": 0x00100010,
    "DA": "20200101",
    "DT": "20200101120000",
    "TM": "120000",
    "AS": "030Y",
    "UI": "1.2.3",
    **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"), 1),
}


def _x_rows_dataset() -> tuple[Dataset, list[int]]:
    """An instance holding every attribute whose basic action is X (with a value)."""
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3.4"
    listed = []
    for tag, row in load_table().rows.items():
        if row.basic is not Action.REMOVE or tag >> 16 in (0x0000, 0x0002):
            continue
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue  # newer than pydicom's dictionary: no VR to write it with
        ds.add_new(tag, vr, _VALUES.get(vr, b"\x00\x01" if vr[0] == "O" or vr == "UN" else "1"))
        listed.append(tag)
    return ds, listed


def test_every_x_attribute_is_removed() -> None:
    ds, listed = _x_rows_dataset()
    assert len(listed) > 300
    out = deidentify(ds, retain_uids=False, retain_device=False, mapping=StudyMapping(SECRET))
    assert [hex(t) for t in listed if t in out] == []
    kept = deidentify(ds, retain_uids=True, retain_device=True, mapping=StudyMapping(SECRET))
    table = load_table()
    for tag in listed:  # under the options, exactly the rows they keep survive
        row = table.rows[tag]
        assert (tag in kept) == (row.action(retain_uids=True, retain_device=True) is Action.KEEP)


def _sr() -> Dataset:
    return pydicom.dcmread(get_testdata_file("test-SR.dcm"))


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "test-SR.dcm", "examples_overlay.dcm", "rtplan.dcm"]
)
def test_pydicom_test_files(name: str) -> None:
    original = pydicom.dcmread(get_testdata_file(name))
    watched = [
        str(original.get(k, "") or "")
        for k in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "InstitutionName",
            "ReferringPhysicianName",
            "OperatorsName",
            "StationName",
            "AccessionNumber",
            "StudyID",
        )
    ]
    out = deidentify(original, retain_uids=False, retain_device=False, mapping=StudyMapping(SECRET))
    kept = str(original.get("Manufacturer", ""))  # not identifying, kept: may equal a name
    assert _leaks(out, [w for w in watched if len(w) >= 3 and w not in kept]) == []
    back = pydicom.dcmread(io.BytesIO(_to_bytes(out)))
    assert back.get("PixelData") == original.get("PixelData")
    assert back.SOPInstanceUID != original.SOPInstanceUID
    assert not any(e.tag.is_private for e in _walk(back))


def test_structured_report_content_is_cleaned() -> None:
    original = _sr()
    names = [str(e.value) for e in _walk(original) if e.VR == "PN" and e.value]
    texts = [str(e.value) for e in _walk(original) if e.keyword == "TextValue"]
    out = deidentify(original, retain_uids=False, retain_device=False, mapping=StudyMapping(SECRET))
    assert names and texts
    assert _leaks(out, [*names, *texts]) == []
    kept = [e.value for e in _walk(out) if e.keyword == "ValueType"]
    assert kept == [e.value for e in _walk(original) if e.keyword == "ValueType"]


def test_refusals() -> None:
    _, series = make_ct_series(2, 8, 8)
    mapping = StudyMapping(SECRET)
    deidentify(series[0], retain_uids=False, retain_device=False, mapping=mapping)
    with pytest.raises(PrivacyError, match="same options"):
        deidentify(series[1], retain_uids=True, retain_device=False, mapping=mapping)
    _, elsewhere = make_ct_series(2, 8, 8, seed=9)
    with pytest.raises(PrivacyError, match="another study"):
        deidentify(elsewhere[0], retain_uids=False, retain_device=False, mapping=mapping)
    burned = copy.deepcopy(series[1])
    burned.BurnedInAnnotation = "YES"
    with pytest.raises(PrivacyError, match="burned-in"):
        deidentify(burned, retain_uids=False, retain_device=False, mapping=mapping)


ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
LABELS = (
    OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), (220, 120, 80)),
    OutputLabel(2, "Left lung", ANATOMY, Code("44029006", "SCT", "Left lung"), (80, 150, 220)),
)
ALGORITHM = AlgorithmInfo(
    name="ct-chest-lungs",
    version="1.0.0",
    family=Code("123110", "DCM", "Artificial Intelligence"),
    device_uid=device_uid("ct-chest-lungs", "1.0.0"),
)


def test_results_made_elsewhere_go_back_into_the_original_study(
    tmp_path: Path, study: list[list[Dataset]], basic: tuple[StudyMapping, list[list[Dataset]]]
) -> None:
    mapping, out = basic
    labels = make_ct_series(12, 64, 64, spacing_mm=(12.5, 5.6, 5.6))[0].labels
    volumes = tuple(
        Measurement(label.value, VOLUME, float(np.count_nonzero(labels == label.value)), ML)
        for label in LABELS
    )
    results = encode_results(  # "elsewhere": the model only ever saw the de-identified series
        out[0],
        ModelOutput(LABELS, labels, measurements=volumes),
        ALGORITHM,
        "remote-job",
        content_datetime=dt.datetime(2026, 1, 2),
    )
    assert [r.Modality for r in results] == ["SEG", "SR"]
    mapping.save(tmp_path)
    loaded = StudyMapping.load(tmp_path, results[0].StudyInstanceUID, SECRET)
    source = study[0]
    original_uids = {ds.SOPInstanceUID for ds in source}
    for result in results:
        back = reidentify(result, loaded)
        assert back.StudyInstanceUID == source[0].StudyInstanceUID
        assert (back.PatientName, back.PatientID) == (CANARY_PATIENT_NAME, CANARY_PATIENT_ID)
        assert back.PatientBirthDate == CANARY_BIRTH_DATE and back.AccessionNumber == "ACC0001"
        assert back.ReferringPhysicianName == PLANTED["ReferringPhysicianName"]
        assert not [k for k in DEIDENTIFICATION_MARKERS if k in back]
        assert (back.SOPInstanceUID, back.SeriesInstanceUID) == (
            result.SOPInstanceUID,
            result.SeriesInstanceUID,
        )  # the result's own UIDs are not the mapping's
        referenced = {e.value for e in _walk(back) if e.keyword == "ReferencedSOPInstanceUID"}
        assert referenced and referenced <= original_uids
        series = {e.value for e in _walk(back) if e.keyword == "SeriesInstanceUID"}
        assert series == {back.SeriesInstanceUID, source[0].SeriesInstanceUID}
        assert not [e for e in _walk(back) if "ANON" in str(e.value)]
        assert not set(mapping.uids.values()) & {str(e.value) for e in _walk(back)}
        pydicom.dcmread(io.BytesIO(_to_bytes(back)))
    seg = reidentify(results[0], loaded)
    hd.seg.Segmentation.from_dataset(seg)  # still a Segmentation highdicom can read
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    acquisition = seg.ContributingEquipmentSequence[0]  # the source's equipment, as it was
    assert acquisition.PurposeOfReferenceCodeSequence[0].CodeValue == "109101"
    assert acquisition.InstitutionName == PLANTED["InstitutionName"]
    assert acquisition.StationName == DEVICE["StationName"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    with pytest.raises(PrivacyError, match="does not belong"):
        reidentify(source[0], loaded)


def test_mapping_file_is_private_and_holds_no_secret(
    tmp_path: Path, basic: tuple[StudyMapping, list[list[Dataset]]]
) -> None:
    mapping = basic[0]
    path = mapping.save(tmp_path / "mappings")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.name == f"{mapping.pseudonymous_study_uid}.json"
    text = path.read_text()
    assert SECRET.hex() not in text and "secret" not in text
    data = json.loads(text)
    assert data["identifiers"]["PatientID"]["original"] == CANARY_PATIENT_ID
    loaded = StudyMapping.load(tmp_path / "mappings", mapping.pseudonymous_study_uid, SECRET)
    assert loaded.to_json() == mapping.to_json()
    with pytest.raises(PrivacyError, match="non-conformant"):
        StudyMapping.load(tmp_path, "../../etc/passwd", SECRET)
    with pytest.raises(PrivacyError, match="no de-identification mapping"):
        StudyMapping.load(tmp_path, "1.2.3", SECRET)


def test_secret_is_made_once_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "privacy" / "secret"
    secret = load_or_create_secret(path)
    assert len(secret) == 32 and load_or_create_secret(path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_or_create_secret(path)
    path.chmod(0o600)
    path.write_text("abcd\n")
    with pytest.raises(ConfigError, match="shorter"):
        load_or_create_secret(path)
    with pytest.raises(ValueError, match="32 bytes"):
        StudyMapping(b"short")


def test_secret_file_setting(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[storage]\nroot = "data/storage"\n')
    assert secret_file_path(load_settings(config, env={})) == tmp_path / "data/privacy/secret"
    config.write_text('[privacy]\nsecret_file = "keys/deid"\n')
    assert secret_file_path(load_settings(config, env={})) == tmp_path / "keys/deid"
