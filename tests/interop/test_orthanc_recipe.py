"""The Orthanc auto-forward recipe (docs/recipes/orthanc-autoforward.lua) in a real Orthanc.

A modality sends a study (a localizer, a thin and a thick series, a moment apart) to a
fresh Orthanc that loads the recipe file as shipped; a dcmtk storescp that keeps every
reception stands in for the node as the ``ai-node`` modality. Checked: each series
forwarded exactly once, in the order Orthanc received it; an object carrying the node's
equipment identity (a CT image, so not recognised by SOP class) is never forwarded and
the stable study forwards nothing more; late instances make their series go again;
QIDO-RS lists the study's series. Also: the fixture stops Orthanc by its pid, a missing
Orthanc fails in CI, and the documentation's configuration fits the recipe.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_ai_node.testing.series import make_ct_series, phi_canaries_in

from ..orthanc import (
    RECIPE,
    Orthanc,
    OrthancFactory,
    RecordingStoreSCP,
    recipe_constant,
    recipe_user_metadata,
    require_orthanc,
    wait_until,
)

pytestmark = [pytest.mark.interop]

DOC = RECIPE.parent / "orthanc.md"
#: The node's equipment identity (General Equipment, PS3.3 C.7.5.1) in its result objects.
NODE_MANUFACTURER = "dicom-ai-node"
NODE_UID_ROOT = "1.2.826.0.1.3680043.10.1453."
STABLE_AGE_S = 2
GAP_S = 1.0  # between the modality's series: less than StableAge
SIZE = 64
FORWARD = "ai-node-forward: "


def ct_series(
    study_uid: str, seed: int, slices: int, thickness_mm: float, number: int, description: str
) -> list[Dataset]:
    """A small CT series of the study (64x64 slices)."""
    spacing = (thickness_mm, 5.0, 5.0)
    _, datasets = make_ct_series(
        slices,
        SIZE,
        SIZE,
        spacing,
        seed=seed,
        study_instance_uid=study_uid,
        series_description=description,
    )
    for ds in datasets:
        ds.SeriesNumber = number
    return datasets


def localizer(study_uid: str, seed: int) -> list[Dataset]:
    """A one-image localizer series."""
    datasets = ct_series(study_uid, seed, 1, 1.0, 1, "Topogram")
    datasets[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    return datasets


def node_made(study_uid: str, seed: int, *, device_uid: str | None) -> Dataset:
    """A CT image as the node would make it: its equipment identity, a series of its own.

    ``device_uid=None`` leaves Device UID out: Manufacturer alone must not be enough.
    """
    ds = ct_series(study_uid, seed, 1, 1.0, 9001, "AI result")[0]
    ds.Manufacturer = NODE_MANUFACTURER
    if device_uid is not None:
        ds.DeviceUID = device_uid
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "109102", "DCM"
    purpose.CodeMeaning = "Processing Equipment"
    item = Dataset()
    item.Manufacturer = NODE_MANUFACTURER
    item.PurposeOfReferenceCodeSequence = [purpose]
    ds.ContributingEquipmentSequence = [item]
    return ds


def start_pacs(factory: OrthancFactory, node: RecordingStoreSCP) -> Orthanc:
    """Orthanc with the recipe file as shipped, forwarding to the stand-in node."""
    return factory.start(
        modalities={recipe_constant("TARGET"): (node.ae_title, "127.0.0.1", node.port)},
        lua_scripts=[RECIPE],
        stable_age_s=STABLE_AGE_S,
        user_metadata=recipe_user_metadata(),
    )


def wait_for_received(node: RecordingStoreSCP, count: int, pacs: Orthanc) -> list[Dataset]:
    """Wait (bounded) until the stand-in node has received ``count`` instances in all."""

    def probe() -> list[Dataset] | None:
        found = node.received()
        return found if len(found) >= count else None

    return wait_until(f"{count} instances at the node", probe, 30.0, pacs.tail)


def stable_events(pacs: Orthanc, study_uid: str) -> int:
    """How many times the recipe saw the study stable so far."""
    return len(pacs.lua_lines(f"{FORWARD}study {study_uid} "))


def decisions_after(pacs: Orthanc, study_uid: str, events: int) -> list[str]:
    """What the recipe printed from the study's stable event number ``events + 1`` on."""
    lines = pacs.lua_lines(FORWARD)
    starts = [i for i, line in enumerate(lines) if line.startswith(f"{FORWARD}study {study_uid} ")]
    return lines[starts[events] + 1 :] if len(starts) > events else []


@pytest.mark.slow
def test_recipe_forwards_each_series_once_in_order_and_never_the_nodes_own(
    orthanc_factory: OrthancFactory, recording_storescp: RecordingStoreSCP, tmp_path: Path
) -> None:
    node = recording_storescp
    pacs = start_pacs(orthanc_factory, node)
    study_uid = generate_uid(NODE_UID_ROOT)
    # received order differs from Series Number order: localizer, thin (3), thick (2)
    sent = [
        localizer(study_uid, 11),
        ct_series(study_uid, 12, 8, 1.25, 3, "Thorax 1.25mm"),
        ct_series(study_uid, 13, 4, 5.0, 2, "Thorax 5mm"),
    ]
    for i, series in enumerate(sent):
        time.sleep(GAP_S if i else 0)
        pacs.send(series)
    uids = [str(s[0].SeriesInstanceUID) for s in sent]

    received = wait_for_received(node, 13, pacs)
    pacs.wait_for_lua(rf"^{FORWARD}forward series .* 4 instances$", timeout_s=30)
    counts = Counter(str(ds.SOPInstanceUID) for ds in received)
    assert set(counts.values()) == {1} and len(counts) == 13, pacs.tail()
    assert node.series_order() == uids, pacs.tail()
    forwarded = {
        s.series_instance_uid: s.metadata.get("AiNodeForwarded") for s in pacs.series(study_uid)
    }
    assert forwarded == {uid: f"forwarded:{len(s)}" for uid, s in zip(uids, sent, strict=True)}

    check_own_objects_stay(pacs, node, study_uid, tmp_path / "download")
    check_late_instances_go_again(pacs, node, study_uid)
    check_qido_lists_series(pacs, study_uid, 5)
    recipe_lines = pacs.lua_lines(FORWARD)
    assert not phi_canaries_in("\n".join(recipe_lines)), recipe_lines


def check_own_objects_stay(
    pacs: Orthanc, node: RecordingStoreSCP, study_uid: str, folder: Path
) -> None:
    """The node's object is skipped by its identity; an impostor without Device UID goes.

    The skipped object stays in Orthanc as stored (downloaded into ``folder``).
    """
    before, events = len(node.received()), stable_events(pacs, study_uid)
    own = node_made(study_uid, 21, device_uid=generate_uid(NODE_UID_ROOT))
    impostor = node_made(study_uid, 22, device_uid=None)
    pacs.send([own, impostor], calling_ae_title="AI_NODE")
    pacs.wait_for_lua(rf"^{FORWARD}forward series {impostor.SeriesInstanceUID} ")
    arrived = wait_for_received(node, before + 1, pacs)
    assert [str(ds.SOPInstanceUID) for ds in arrived[before:]] == [impostor.SOPInstanceUID]
    assert stable_events(pacs, study_uid) == events + 1, pacs.tail()
    decisions = decisions_after(pacs, study_uid, events)
    assert sum(line.endswith("nothing new") for line in decisions) == 3, decisions  # modality's
    assert sum(f" {own.SeriesInstanceUID} " in line for line in decisions) == 1, decisions
    stored = {s.series_instance_uid: s for s in pacs.series(study_uid)}[own.SeriesInstanceUID]
    assert stored.metadata.get("AiNodeForwarded") == "own:1"
    [path] = pacs.download_series(stored.orthanc_id, folder)
    kept = dcmread(path, stop_before_pixels=True)
    assert (kept.SOPInstanceUID, kept.DeviceUID) == (own.SOPInstanceUID, own.DeviceUID)


def check_late_instances_go_again(pacs: Orthanc, node: RecordingStoreSCP, study_uid: str) -> None:
    """Two late slices of the thick series: that series (only) is forwarded again."""
    before, events = len(node.received()), stable_events(pacs, study_uid)
    grown = ct_series(study_uid, 13, 6, 5.0, 2, "Thorax 5mm")
    pacs.send(grown[4:])
    pacs.wait_for_lua(rf"^{FORWARD}forward again series {grown[0].SeriesInstanceUID} ")
    arrived = wait_for_received(node, before + 6, pacs)[before:]
    assert sorted(str(ds.SOPInstanceUID) for ds in arrived) == sorted(
        str(ds.SOPInstanceUID) for ds in grown
    ), pacs.tail()
    assert stable_events(pacs, study_uid) == events + 1, pacs.tail()
    thick = [
        s for s in pacs.series(study_uid) if s.series_instance_uid == grown[0].SeriesInstanceUID
    ]
    assert thick[0].metadata.get("AiNodeForwarded") == "forwarded:6"


def check_qido_lists_series(pacs: Orthanc, study_uid: str, count: int) -> None:
    """QIDO-RS lists every series of the study, the node's included."""
    found = pacs.qido_series(study_uid)
    series = {item["0020000E"]["Value"][0] for item in found}
    assert series == {s.series_instance_uid for s in pacs.series(study_uid)}
    assert len(series) == count, found


@pytest.mark.slow
def test_failed_forward_is_not_remembered_and_goes_at_the_next_stable_event(
    orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    node = RecordingStoreSCP(tmp_path / "late-node")  # not listening yet
    pacs = start_pacs(orthanc_factory, node)
    study_uid = generate_uid(NODE_UID_ROOT)
    first = ct_series(study_uid, 31, 3, 5.0, 2, "Thorax 5mm")
    pacs.send(first)
    pacs.wait_for_lua(rf"^{FORWARD}failed to forward series {first[0].SeriesInstanceUID} ")
    assert [s.metadata.get("AiNodeForwarded") for s in pacs.series(study_uid)] == [None]
    node.start()
    try:
        second = ct_series(study_uid, 32, 2, 1.25, 3, "Thorax 1.25mm")
        pacs.send(second)
        received = wait_for_received(node, 5, pacs)
        assert node.series_order() == [first[0].SeriesInstanceUID, second[0].SeriesInstanceUID]
        assert len({ds.SOPInstanceUID for ds in received}) == len(received) == 5
    finally:
        node.stop()


def test_fixture_stops_orthanc_by_its_pid(tmp_path: Path) -> None:
    factory = OrthancFactory(tmp_path)
    try:
        pacs = factory.start(stable_age_s=1)
        assert pacs.get("/system")["DicomAet"] == "ORTHANC"
        assert "dicom-web" in pacs.get("/plugins"), pacs.tail()
    finally:
        factory.stop_all()
    assert pacs.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pacs.proc.pid, 0)


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_orthanc_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr("tests.orthanc.DICOMWEB_PLUGIN", tmp_path / "absent.so")
    with pytest.raises(outcome):
        require_orthanc()


def test_recipe_constants_are_the_nodes_identity() -> None:
    from dicom_ai_node.encode import UID_ROOT

    assert recipe_constant("NODE_MANUFACTURER") == NODE_MANUFACTURER
    assert recipe_constant("NODE_UID_ROOT") == NODE_UID_ROOT == UID_ROOT


def test_documented_configuration_fits_the_recipe() -> None:
    """The JSON snippet in docs/recipes/orthanc.md names what the recipe needs."""
    snippet = re.search(r"```json\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert snippet is not None, "docs/recipes/orthanc.md has no JSON configuration"
    config = json.loads(snippet.group(1))
    assert recipe_constant("TARGET") in config["DicomModalities"]
    assert config["UserMetadata"] == recipe_user_metadata()
    assert any(path.endswith(RECIPE.name) for path in config["LuaScripts"])
    assert "StableAge" in config
