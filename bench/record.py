"""Bench: a recorded run, the same studies through the real node before and after a change.

``inputs`` writes a fixed set of generated studies (fixed seeds and UIDs: two calls write
the same bytes), at least one per built-in model family, among them a chest CT of three
series (topogram, 5 mm, 2.5 mm: the study-level choice) and three series without
BodyPartExamined (the CT, MR and radiograph body-region classifiers decide). ``run`` starts
``dicom-ai-node serve`` from a checkout, sends each study with dcmtk ``storescu`` (in name
order, one association each) and receives the results with a dcmtk ``storescp`` (the
sender's AE in the node's AE table). Once every series is decided, every job finished and
every result delivered, it writes a JSON record:

* ``jobs``: job key, model, version, subject, revision, final state and reason;
* ``series``: each received series' routing state and reason;
* ``deliveries``: how many deliveries ended in each state;
* ``results``: per file storescp received, SOP Instance UID, SOP Class UID, Series Instance
  UID, Series Number, Modality, transfer syntax, the sha256 of the file (``sha256_raw``)
  and the sha256 of the data set re-serialised by pydicom (same transfer syntax) after
  normalising (``sha256_normalised``);
* ``jobs_report``: the node's own ``jobs`` report, for reading (it has times: not compared).

``compare`` prints every difference between two records, all fields but ``sha256_raw``,
``jobs_report`` and the run's own facts (paths, commit, wall time), and exits 1 if any.

Normalised: the node gives the results the job's creation time as content date and time,
so every non-empty DA, TM and DT element, nested sequences included, is set to a fixed
value (``normalised_vrs``): ContentDate/Time, SeriesDate/Time, InstanceCreationDate/Time and
ContributionDateTime (Contributing Equipment); the record lists those it met
(``normalised``). Kept as they are (``kept``): PatientBirthDate, StudyDate and StudyTime,
copied from the source study, whose values are fixed inputs. Two runs of the same code
differ in nothing else (checked element by element): UIDs derive from the job keys, and
pixels, measurements and routing reasons from the inputs.

The code run is the checkout's: the node (and ``jobs``) start through a bootstrap that puts
the checkout first on ``sys.path`` (the editable install's finder comes after it) and
stops unless ``dicom_ai_node.__file__`` lies in the checkout; the record keeps that path.

Usage (about a minute a run on 2 CPUs)::

    python bench/record.py inputs DIR [--code CHECKOUT]
    python bench/record.py run --code CHECKOUT --inputs DIR --out FILE.json [--timeout 900]
    python bench/record.py compare A.json B.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from processes import dcmtk_env, free_port, stop, wait_for_port
from pydicom import dcmread
from pydicom.dataset import Dataset

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
NODE_AE, SENDER_AE = "AI_NODE", "STORESCU"
DCMTK_ENV = dcmtk_env()
#: The fixed value each date/time VR is normalised to.
FIXED = {"DA": "20000101", "TM": "000000", "DT": "20000101000000"}
#: Dates and times the results copy from their source study: fixed inputs, kept as they are.
KEPT = {"PatientBirthDate", "StudyDate", "StudyTime"}
JOB_DONE = {"done", "quality_failed", "failed", "superseded"}
SERIES_DONE = {"routed", "not_routed"}
JOB_FIELDS = ("job_key", "model", "version", "subject", "revision", "state", "reason")
SERIES_FIELDS = ("series_instance_uid", "modality", "series_number", "state", "reason")
#: Puts the checkout (argv[1]) first on sys.path, checks where the package comes from, runs the CLI.
BOOT = (
    "import sys; code = sys.argv.pop(1); sys.path.insert(0, code); import dicom_ai_node as m; "
    "f = m.__file__ or ''; print('dicom_ai_node from', f, file=sys.stderr, flush=True); "
    "assert f.startswith(code + '/'), f'{f} is not inside {code}'; "
    "from dicom_ai_node.cli import main; sys.exit(main(sys.argv[1:]))"
)


def make_inputs(folder: Path) -> None:
    """Write the studies: the end-to-end tests' sizes and held-out seeds, fixed UIDs."""
    import numpy as np

    from dicom_ai_node.testing.images import (
        mammogram_to_dataset as to_mg,
    )
    from dicom_ai_node.testing.images import (
        radiograph_to_dataset as to_xr,
    )
    from dicom_ai_node.testing.images import (
        ultrasound_to_datasets as to_us,
    )
    from dicom_ai_node.testing.phantoms.brain_mr import BrainPhantom as mr_volume
    from dicom_ai_node.testing.phantoms.brain_mr import brain_mr_phantom as brain
    from dicom_ai_node.testing.phantoms.chest_ct import ChestPhantom as ct_volume
    from dicom_ai_node.testing.phantoms.chest_xr import chest_radiograph as chest_xr
    from dicom_ai_node.testing.phantoms.cine_mr import cine_phantom as cine
    from dicom_ai_node.testing.phantoms.extremity_xr import extremity_radiograph as limb_xr
    from dicom_ai_node.testing.phantoms.head_cta import cta_phantom as cta
    from dicom_ai_node.testing.phantoms.kidney_ct import kidney_ct_phantom as kidney_ct
    from dicom_ai_node.testing.phantoms.kidney_mr import kidney_mr_phantom as kidney_mr
    from dicom_ai_node.testing.phantoms.liver_mr import CYST as cyst
    from dicom_ai_node.testing.phantoms.liver_mr import METASTASIS as metastasis
    from dicom_ai_node.testing.phantoms.liver_mr import liver_mr_phantom as liver
    from dicom_ai_node.testing.phantoms.mammography import mammogram
    from dicom_ai_node.testing.phantoms.ultrasound import ultrasound_image as us_image
    from dicom_ai_node.testing.series import (
        cine_to_datasets as to_cine,
    )
    from dicom_ai_node.testing.series import (
        make_ct_series as ct_series,
    )
    from dicom_ai_node.testing.series import (
        mr_to_datasets as to_mr,
    )
    from dicom_ai_node.testing.series import (
        phantom_to_datasets as to_ct,
    )
    from dicom_ai_node.testing.series import (
        write_series as write,
    )
    from tests.studies import chest_ct_study

    rng = np.random.default_rng
    chest = chest_ct_study(101)  # topogram, 5 mm and 2.5 mm series: routing takes the thin one
    xr_rng = rng(20_300)
    effusion, normal = chest_xr(1536, xr_rng, "effusion"), chest_xr(1536, xr_rng)
    lv = liver(20_810, lesions=2, kinds=(cyst, metastasis))
    kmr = kidney_mr(30, 256, (4.0, 1.4, 1.4), 20_710, tumour=True)
    kct = kidney_ct(60, 256, (3.0, 1.4, 1.4), 20_000, tumour=True, contrast=True)
    head = cta(20_700, aneurysms=1)
    t2 = {"series_description": "T2 HASTE AX"}
    no_region = {"body_part_examined": None, "series_description": "", "study_description": ""}
    studies: dict[str, list[Dataset]] = {
        "01-chest-ct-3-series": [*chest.topogram, *chest.thick, *chest.thin],
        "02-chest-xr-effusion": [to_xr(effusion, seed=20_300, monochrome1=True)],
        "03-chest-xr-normal": [to_xr(normal, seed=20_301)],
        "04-forearm-xr-fracture": [
            to_xr(limb_xr(1536, rng(20_312), fracture=True), seed=20_312,
                  body_part_examined="FOREARM", view_position="AP")
        ],
        "05-mammogram": [to_mg(mammogram(rng(20_800), clusters=2), seed=20_800)],
        "06-thyroid-us": to_us(
            [us_image(rng(s), "thyroid", 1, (420, 560)) for s in (20_400, 20_401)], seed=20_400
        ),
        "07-breast-us": to_us([us_image(rng(20_402), "breast", 1)], seed=20_402,
                              body_part_examined="BREAST", series_description="R BREAST"),
        "08-brain-mr": to_mr(brain(28, 192, 20_400, atrophy=0.6, medial_atrophy=0.7),
                             seed=20_400, series_description="T1 MPRAGE AX"),
        "09-liver-mr": to_mr(mr_volume(lv.image, lv.labels, lv.spacing_mm, 0.0), seed=20_810,
                             body_part_examined="LIVER", study_description="MR LIVER", **t2),
        "10-kidney-mr": to_mr(
            mr_volume(kmr.hu.astype(np.float32), kmr.labels, kmr.spacing_mm, 0.0), seed=20_710,
            body_part_examined="KIDNEY", study_description="MR KIDNEYS", **t2),
        "11-kidney-ct": to_ct(
            ct_volume(hu=kct.hu, labels=kct.labels, spacing_mm=kct.spacing_mm), seed=20_000,
            body_part_examined="ABDOMEN", series_description="CT ABDOMEN 3mm PV",
            study_description="CT ABDOMEN"),
        "12-head-cta": to_ct(
            ct_volume(hu=head.hu, labels=head.labels, spacing_mm=head.spacing_mm), seed=20_700,
            body_part_examined="HEAD", series_description="CTA COW 0.75mm",
            study_description="CT ANGIO HEAD"),
        "13-cardiac-cine-mr": to_cine(
            cine(20_600, levels=4, phases=20, size=128, ejection_fraction=0.35), seed=20_600),
        # no BodyPartExamined and no descriptions: the body-region classifiers decide
        "14-ct-no-body-part": ct_series(24, 128, 128, (5.0, 2.8, 2.8), seed=302, **no_region)[1],
        "15-mr-no-body-part": to_mr(brain(16, 128, seed=31), seed=31, body_part_examined=None,
                                    series_description="T1 AX", study_description=""),
        "16-xr-no-body-part": [
            to_xr(limb_xr(256, rng(33), fracture=True), seed=33, monochrome1=True,
                  view_position="AP", body_part_examined=None)
        ],
    }  # fmt: skip
    for name, datasets in studies.items():
        write(datasets, folder / name)


def node_config(work: Path, code: Path, port: int, pacs_port: int) -> Path:
    text = f"""base_dir = "{work}"
[dicom]
ae_title = "{NODE_AE}"
host = "127.0.0.1"
port = {port}
[storage]
root = "{work / "storage"}"
database_url = "sqlite:///{work / "node.db"}"
spare_pool_mb = 16
[assemble]
quiet_period_s = 1.0
study_quiet_period_s = 2.0
sweep_interval_s = 0.2
[route]
rules_file = "{code / "models" / "rules.yaml"}"
[infer]
models_dir = "{code / "models"}"
device = "cpu"
workers = 1
[send]
retry_initial_s = 1.0
retry_max_s = 5.0
[[ae_table]]
ae_title = "{SENDER_AE}"
host = "127.0.0.1"
port = {pacs_port}
"""
    (work / "node.toml").write_text(text)
    return work / "node.toml"


def inputs_digest(folder: Path) -> tuple[str, list[list[Path]], set[str]]:
    """sha256 over every input file's name and bytes; the studies' files; the series UIDs."""
    digest, studies, series = hashlib.sha256(), [], set()
    for study in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(study.glob("*.dcm"))
        studies.append(files)
        for path in files:
            digest.update(f"{path.relative_to(folder)}\n".encode() + path.read_bytes())
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            series.add(str(ds.SeriesInstanceUID))
    return digest.hexdigest(), studies, series


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql).fetchall()


def progress(db: Path, pacs: Path, n_series: int) -> tuple[bool, str]:
    """Whether every series is decided, every job finished and every result delivered."""
    if not db.exists():
        return False, "no database yet"
    series, jobs, deliveries = ([s for (s,) in query(db, f"SELECT state FROM {t}")]
                                for t in ("series", "job", "delivery"))  # fmt: skip
    delivered = deliveries.count("delivered")
    files = sum(1 for p in pacs.iterdir() if p.is_file())
    done = (
        len(series) == n_series
        and set(series) <= SERIES_DONE
        and bool(jobs)
        and set(jobs) <= JOB_DONE
        and set(deliveries) <= {"delivered", "failed"}
        and files == delivered
    )
    return done, (
        f"series {sum(s in SERIES_DONE for s in series)}/{n_series} decided, jobs "
        f"{sum(s in JOB_DONE for s in jobs)}/{len(jobs)} finished, deliveries "
        f"{delivered}/{len(deliveries)} delivered, {files} files received"
    )


def normalise(ds: Dataset, seen: set[str]) -> None:
    """Set each non-empty DA, TM and DT element (nested too) to FIXED, but those in KEPT."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                normalise(item, seen)
        elif elem.VR in FIXED and elem.value not in (None, "", b"") and elem.keyword not in KEPT:
            elem.value = FIXED[elem.VR]
            seen.add(elem.keyword or str(elem.tag))


def describe_result(path: Path, seen: set[str]) -> dict[str, Any]:
    raw = path.read_bytes()
    ds = dcmread(io.BytesIO(raw))
    out = {
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "series_number": int(ds.SeriesNumber) if "SeriesNumber" in ds else None,
        "modality": str(ds.get("Modality", "")),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
        "sha256_raw": hashlib.sha256(raw).hexdigest(),
    }
    normalise(ds, seen)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    out["sha256_normalised"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    return out


def collect(db: Path, pacs: Path) -> dict[str, Any]:
    jobs = query(
        db,
        "SELECT job_key, model_name, model_version, subject, revision, state, reason FROM job",
    )
    series = query(
        db, "SELECT series_instance_uid, modality, series_number, state, reason FROM series"
    )
    seen: set[str] = set()
    results = [describe_result(p, seen) for p in sorted(pacs.iterdir()) if p.is_file()]
    deliveries = dict(query(db, "SELECT state, count(*) FROM delivery GROUP BY state"))
    return {
        "jobs": sorted((dict(zip(JOB_FIELDS, row, strict=True)) for row in jobs), key=str),
        "series": [dict(zip(SERIES_FIELDS, r, strict=True)) for r in sorted(series)],
        "deliveries": deliveries,
        "results": sorted(results, key=lambda r: r["sop_instance_uid"]),
        "normalised": sorted(seen),
    }


def send(files: list[Path], port: int) -> None:
    args = ["storescu", "-aet", SENDER_AE, "-aec", NODE_AE, "127.0.0.1", str(port)]
    done = subprocess.run(
        [*args, *map(str, files)], env=DCMTK_ENV, capture_output=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-800:]!r}")


def node(code: Path, python: str, *argv: str, log: Path | None = None) -> Any:
    """The CLI of ``code`` through BOOT: started (output to ``log``) or run (output kept)."""
    args = [python, "-c", BOOT, str(code), *argv]
    env = {**os.environ, "PYTHONPATH": str(code)}
    if log is None:
        return subprocess.run(args, cwd=code, env=env, capture_output=True, text=True, timeout=120)
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=code, env=env,
                                start_new_session=True)  # fmt: skip


def record(args: argparse.Namespace, work: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    code, python, started = args.code.resolve(), str(args.python), time.monotonic()
    digest, studies, series_uids = inputs_digest(args.inputs.resolve())
    pacs, db, node_log = work / "pacs", work / "node.db", work / "node.log"
    pacs.mkdir()
    pacs_port, port = free_port(), free_port()
    config = str(node_config(work, code, port, pacs_port))
    with (work / "storescp.log").open("wb") as log:
        procs.append(subprocess.Popen(
            ["storescp", "+xa", "-aet", SENDER_AE, "-od", str(pacs), str(pacs_port)],
            stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV, start_new_session=True,
        ))  # fmt: skip
    procs.append(node(code, python, "-c", config, "serve", log=node_log))
    wait_for_port(pacs_port, procs[0], 30)
    wait_for_port(port, procs[1], 300)  # loads and warms up every model first
    lines = node_log.read_text("utf-8", "replace").splitlines()
    [module] = [x.split(" from ", 1)[1] for x in lines if x.startswith("dicom_ai_node from ")]
    assert module.startswith(f"{code}/"), module  # the bootstrap checked it too
    print(f"# node from {module}, {len(studies)} studies", file=sys.stderr)
    for files in studies:
        send(files, port)
    deadline, polls, stable, status = time.monotonic() + args.timeout, 0, 0, ""
    while stable < 3:  # three polls in a row (1 s) that find everything done
        polls += 1
        if time.monotonic() > deadline or polls > args.timeout * 2 + 10:
            print(f"timed out: {status}; see {node_log}", file=sys.stderr)
            args.keep = True
            return 2
        if procs[1].poll() is not None:
            raise RuntimeError(f"the node exited ({procs[1].returncode}); see {node_log}")
        done, status = progress(db, pacs, len(series_uids))
        stable = stable + 1 if done else 0
        if polls % 20 == 0:
            print(f"# {time.monotonic() - started:.0f} s: {status}", file=sys.stderr)
        time.sleep(0.5)
    report = node(code, python, "-c", config, "jobs", "--limit", "1000")
    commit = subprocess.run(["git", "-C", str(code), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    out = {
        **{"code": str(code), "commit": commit, "module": module, "inputs_sha256": digest},
        **{"wall_s": round(time.monotonic() - started, 1), "normalised_vrs": FIXED},
        **{"kept": sorted(KEPT), **collect(db, pacs), "jobs_report": report.stdout},
    }
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{status}; {out['wall_s']} s; wrote {args.out}")
    return 0


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Every difference between two records (raw hashes aside: dates differ every run)."""
    diffs = [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in ("inputs_sha256", "deliveries",
             "normalised") if a.get(k) != b.get(k)]  # fmt: skip
    for section, key in (("jobs", "job_key"), ("series", "series_instance_uid"),
                         ("results", "sop_instance_uid")):  # fmt: skip
        rows_a = {r[key]: r for r in a.get(section, [])}
        rows_b = {r[key]: r for r in b.get(section, [])}
        for k in sorted(rows_a.keys() - rows_b.keys()):
            diffs.append(f"{section}: only in A: {rows_a[k]}")
        for k in sorted(rows_b.keys() - rows_a.keys()):
            diffs.append(f"{section}: only in B: {rows_b[k]}")
        for k in sorted(rows_a.keys() & rows_b.keys()):
            for field in sorted((rows_a[k].keys() | rows_b[k].keys()) - {"sha256_raw"}):
                va, vb = rows_a[k].get(field), rows_b[k].get(field)
                if va != vb:
                    diffs.append(f"{section} {k}: {field}: {va!r} != {vb!r}")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inputs", help="write the studies into an empty folder")
    p.add_argument("dir", type=Path)
    p.add_argument("--code", type=Path, help="checkout whose generators to use")
    p = sub.add_parser("run", help="send the studies through a node, write the record")
    for name in ("--code", "--inputs", "--out"):
        p.add_argument(name, type=Path, required=True)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--python", type=Path, default=PYTHON if PYTHON.exists() else sys.executable)
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, storage)")
    p = sub.add_parser("compare", help="compare two records; exit 1 on any difference")
    p.add_argument("records", type=Path, nargs=2)
    args = parser.parse_args()
    if args.command == "inputs":
        if args.dir.exists() and any(args.dir.iterdir()):
            raise SystemExit(f"{args.dir} is not empty")
        # the checkout's generators (not the editable install's) and its tests/studies.py
        sys.path.insert(0, str((args.code or REPO).resolve()))
        make_inputs(args.dir)
        return 0
    if args.command == "compare":
        a, b = (json.loads(path.read_text()) for path in args.records)
        diffs = compare(a, b)
        print("\n".join([*diffs, f"{len(diffs)} differences"]) if diffs else
              f"{len(a['jobs'])} jobs, {len(a['results'])} results identical")  # fmt: skip
        return 1 if diffs else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops them
    work = Path(tempfile.mkdtemp(prefix="record-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        return record(args, work, procs)
    finally:
        for proc in reversed(procs):
            stop(proc, 30.0)
        if args.keep:
            print(f"# kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
