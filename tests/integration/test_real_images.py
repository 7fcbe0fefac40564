"""Real images through the node end to end (issue 3, acceptance 3): CT, CR chest, CR
extremity, MR and US images that pydicom and pydicom-data ship, in their own transfer
syntaxes (JPEG 2000, JPEG lossless, big endian, ...), are sent over DICOM. Each is
stored, each series ends routed or "not routed" with a reason the operator reads, no
job fails, any results pass dciodvfy with 0 errors, and the node stays up.

Where the real images go (issue 18, acceptance 2 and deliverable 3): the real head CT
series, with and without a header that names the head, goes to no chest or abdomen model;
the real chest and lower-leg radiographs go where the rules say; and routing does no harm:
no model the node routes a real image to reports a confident finding on an image of a body
part it does not read, also when no header names the region and the image classifier
decides. ``python -m models.real_images`` prints the same figures for the model cards."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_ai_node.app import Node
from dicom_ai_node.cli import main
from dicom_ai_node.domain import JobState, SeriesState
from dicom_ai_node.send.scu import Peer, send_datasets
from dicom_ai_node.settings import load_settings
from dicom_ai_node.store.tables import Result, Series
from dicom_ai_node.testing.real_series import to_datasets
from dicom_ai_node.testing.real_volumes import invesalius_head_ct
from dicom_ai_node.testing.series import write_series
from models.real_images import Reader, RealImage, real_images, without_region_headers

from ..conftest import IN_CI, free_port, require_exe, write_node_config
from .test_pipeline import jobs, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

#: (file, what it is): one image of each kind; files that hold the same SOP Instance
#: UID in other transfer syntaxes are left out (a re-send with other bytes is 0x0111).
#: pydicom-data's bad_sequence.dcm (UIDs of hexadecimal digits) is refused, below.
PYDICOM = [
    ("CT_small.dcm", "CT, 128x128, no body part"),
    ("MR_small.dcm", "MR, 64x64"),
    ("ExplVR_BigEnd.dcm", "US, explicit VR big endian"),
    ("J2K_pixelrep_mismatch.dcm", "CT head, JPEG 2000 lossless"),
]
PYDICOM_DATA = [
    ("693_J2KR.dcm", "CT head, JPEG 2000 lossless, no body part"),
    ("explicit_VR-UN.dcm", "CT abdomen (PANCREAS), JPEG 2000"),
    ("RG1_J2KI.dcm", "CR chest, JPEG 2000, 1955x1841"),
    ("RG3_J2KI.dcm", "CR extremity, JPEG 2000"),
    ("MR2_J2KI.dcm", "MR, JPEG 2000, 1024x1024"),
    ("emri_small.dcm", "enhanced MR, multi-frame"),
    ("US1_J2KI.dcm", "US, JPEG 2000, RGB"),
    ("OBXXXX1A.dcm", "US, palette colour"),
]


def _testdata_path(name: str) -> Path | None:
    found = get_testdata_file(name)
    return Path(found) if isinstance(found, str) else None


def _real_images() -> list[tuple[str, Dataset]]:
    try:
        import data_store
    except ImportError:
        message = "pydicom-data not installed (the test extra installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = Path(data_store.__file__).parent / "data"
    paths = [(name, _testdata_path(name)) for name, _ in PYDICOM]
    paths += [(name, next(root.rglob(name), None)) for name, _ in PYDICOM_DATA]
    found = [(name, path) for name, path in paths if path is not None]
    assert len(found) == len(paths), [name for name, path in paths if path is None]
    return [(name, dcmread(path)) for name, path in found]


def _bad_uids() -> Dataset:
    import data_store

    path = next((Path(data_store.__file__).parent / "data").rglob("bad_sequence.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


def test_real_images_are_stored_and_routed_or_not_with_a_reason(tmp_path: Path) -> None:
    images = _real_images()
    port = free_port()
    config = write_node_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", port, [], 0.5)
    node = Node(load_settings(config))
    try:
        node.start()
        peer = Peer("AI_NODE", "127.0.0.1", port)
        for name, ds in images:
            [outcome] = send_datasets([ds], peer, calling_ae_title="MODALITY")
            assert outcome.delivered and outcome.status == 0x0000, (name, outcome)
        series_uids = {ds.SeriesInstanceUID for _, ds in images}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of the UIDs it sends
            [refused] = send_datasets([_bad_uids()], peer, calling_ae_title="MODALITY")
        assert refused.status == 0xC000, refused  # never a path, never stored

        def decided() -> list[Series]:
            with node.db.session() as session:
                rows = list(session.scalars(select(Series)))
            done = (SeriesState.ROUTED.value, SeriesState.NOT_ROUTED.value)
            settled = {r.series_instance_uid for r in rows if r.state in done}
            return rows if settled >= series_uids else []

        wait_until(lambda: bool(decided()), 90, "a routing decision for every series")
        for row in decided():
            assert row.reason, row.series_instance_uid
            assert "body part" in row.reason, row.reason  # how the region was decided
            print(f"{row.modality} {row.series_description!r}: {row.state}: {row.reason}")
        active = (JobState.QUEUED.value, JobState.RUNNING.value)
        wait_until(lambda: not [j for j in jobs(node) if j.state in active], 120, "jobs ended")
        for job in jobs(node):
            assert job.state in (JobState.DONE.value, JobState.QUALITY_FAILED.value), (
                job.model_name,
                job.state,
                job.reason,
            )
        with node.db.session() as session:
            results = [node.files.absolute(r.path) for r in session.scalars(select(Result))]
    finally:
        node.stop()
    dciodvfy = require_exe("dciodvfy") if results else ""
    for path in results:
        done = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
        errors = [
            line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == [], (path.name, errors[:5])


@pytest.fixture(scope="module")
def reader() -> Reader:
    """The node's routing (built-in rules, body-region models) and models."""
    return Reader()


def _pydicom_image(name: str) -> RealImage:
    _real_images()  # skips (fails in CI) without pydicom-data
    [image] = [i for i in real_images(volumes=False) if i.name == name]
    return image


@pytest.mark.usefixtures("real_volumes")
@pytest.mark.parametrize("body_part_examined", [None, "HEAD"], ids=["no-region-headers", "HEAD"])
def test_the_real_head_ct_goes_to_no_chest_or_abdomen_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body_part_examined: str | None
) -> None:
    # without BodyPartExamined the descriptions name no region either: the CT body-region
    # model decides from the pixels
    bare = body_part_examined is None
    datasets = to_datasets(
        invesalius_head_ct(),
        seed=1801,
        body_part_examined=body_part_examined,
        series_description="AXIAL 1.5mm" if bare else None,
        study_description="CT" if bare else None,
    )
    write_series(datasets, tmp_path / "head-ct")
    assert main(["route", "explain", str(tmp_path / "head-ct")]) == 0
    out = capsys.readouterr().out
    source = "BodyPartExamined 'HEAD'" if body_part_examined else "image classifier"
    assert f"body part: HEAD from {source}" in out, out
    routed = [line.strip() for line in out.splitlines() if line.strip().startswith("-> ")]
    # The only head CT model is the angiography one, and its rule asks for an angiogram's
    # SeriesDescription: a plain head CT goes nowhere, and the chest and abdomen rules
    # say that the head is not their region.
    [line] = routed
    assert line.startswith(
        "-> not routed: no rule matched: 'chest-ct-lungs': body_part 'HEAD' is not one of "
        "[CHEST]; 'abdomen-ct-kidneys': body_part 'HEAD' is not one of [ABDOMEN]; "
        "'head-cta-aneurysm': SeriesDescription "
        f"'{datasets[0].SeriesDescription}' does not match regex "
        "'(?i)cta|angio|willis|(^|[^a-z])cow([^a-z]|$)' (and "
    ), line


@pytest.mark.parametrize(
    ("name", "routed"),
    [
        # BodyPartExamined CHEST, CR Image Storage, View Position PA (frontal): the chest
        # rule takes it; the fracture rule wants an arm or a leg
        ("RG1_UNCR.dcm", ("cxr-abnormal",)),
        # BodyPartExamined EXTREMITY is no PS3.16 term of one limb, so the StudyDescription
        # 'Non-ossifying fibroma of distal tibia' decides: LOWER_EXTREMITY ('tibia'), the
        # fracture rule's region, and not among the small bones and girdles it leaves out
        ("RG3_UNCR.dcm", ("xr-fracture",)),
    ],
)
def test_the_real_chest_and_leg_radiographs_go_where_the_rules_say(
    reader: Reader, tmp_path: Path, name: str, routed: tuple[str, ...]
) -> None:
    image = _pydicom_image(name)
    report = reader.report(image, tmp_path, what_if=False)
    assert report.routed == routed, report.routing.reason
    # without the headers that name the region the radiograph body-region model decides,
    # and sends each film to the same model
    bare = reader.report(without_region_headers(image), tmp_path, what_if=False)
    assert bare.routing.decision.body_part.source == "image classifier", bare.routing.reason
    assert bare.routed == routed, bare.routing.reason


def test_the_real_images_go_where_they_went(reader: Reader, tmp_path: Path) -> None:
    """Every real image's route as observed (2026-12-07), so that a change of the rules or
    of a body-region model that moves one shows up here and in the cards' tables."""
    _real_images()
    reports = reader.reports(real_images(volumes=False), what_if=False, findings_only=True)
    routes = {r.image.name: r.routed for r in reports}
    assert {name: models for name, models in routes.items() if models} == {
        "RG1_UNCR.dcm": ("cxr-abnormal",),
        "RG3_UNCR.dcm": ("xr-fracture",),
    }, routes


@pytest.mark.usefixtures("real_volumes")
def test_the_real_volumes_go_where_they_went(reader: Reader, tmp_path: Path) -> None:
    """The real series' routes as observed (2026-12-07). The plain head CT goes nowhere
    (the CTA rule wants an angiogram); the Colin27 T1 goes to brain extraction in every
    plane (any plane is read) and to the atrophy model only axially (its input), also
    when no header names the region."""
    images = [i for i in real_images() if i.name.startswith(("invesalius", "colin27"))]
    reports = reader.reports(images, what_if=False, findings_only=True)
    routes = {r.image.name: r.routed for r in reports}
    extraction = ("mr-brain-extraction",)
    assert routes == {
        "invesalius-head-ct": (),
        "invesalius-head-ct HEAD": (),
        "colin27-t1 axial": ("mr-brain-atrophy", *extraction),
        "colin27-t1 sagittal": extraction,
        "colin27-t1 coronal": extraction,
        # the MR body-region model says HEAD (it was trained on the lower half of these
        # slices, so this is no accuracy figure: the held-out half is tested with it)
        "colin27-t1 axial, no region": ("mr-brain-atrophy", *extraction),
    }, routes


@pytest.mark.usefixtures("real_volumes")
def test_routing_does_no_harm_on_real_images(reader: Reader, tmp_path: Path) -> None:
    """No model the node routes a real image to reports a confident finding (by its own
    threshold: a present class, a lesion or cluster reported, an MTA-style grade of 2 or
    more) on an image of a body part it does not read: with the headers as they are, and
    with every header that names the region removed, so that the image classifiers
    decide. Models that cannot report a finding at all are not run."""
    _real_images()
    images = real_images()
    assert any(i.name.startswith("invesalius") for i in images), "no real volumes"
    harm, routed = [], []
    for image in images + [without_region_headers(i) for i in images]:
        report = reader.report(image, tmp_path, what_if=False, findings_only=True)
        for answer in report.answers:
            routed.append(f"{image.name} -> {answer.model}: {answer.report}")
            if answer.finding and answer.wrong_region:
                harm.append(routed[-1])
    print("\n".join(routed))
    assert harm == [], harm


@pytest.mark.usefixtures("real_volumes")
def test_the_harm_check_can_fail(reader: Reader, tmp_path: Path) -> None:
    """Routing is what keeps a model off the wrong body part: the CT kidney model, given
    the real head CT as if it had been routed there, reports renal tumours (a confident
    finding on a head), which the check above would report."""
    [head] = [i for i in real_images() if i.name == "invesalius-head-ct HEAD"]
    text, finding = reader.run("ct-kidney-tumour", head.load(), "head-ct")
    assert finding and "Renal tumour 1 in Kidney" in text, text


def test_every_model_card_has_a_real_images_section() -> None:
    """Issue 18, acceptance 3: every model's card has a "Real images" section with figures
    on real images (a table), or says that no real image of its kind could be had offline."""
    folders = sorted(p.parent for p in (REPO / "models").glob("*/model.toml"))
    assert len(folders) >= 15, folders
    for folder in folders:
        card = (folder / "MODEL_CARD.md").read_text("utf-8")
        assert "\n## Real images\n" in card, folder.name
        section = card.split("\n## Real images\n", 1)[1].split("\n## ", 1)[0]
        assert "\n| " in section or "could be had offline" in section, folder.name
