"""The node's GSPS read by dcmjs 0.52.0, the DICOM parser OHIF 3.13 ships (issue 17).

OHIF 3.13.2 lists a Grayscale Softcopy Presentation State but does not apply it (see
tests/browser/test_ohif_results.py), and neither dcmjs 0.52 nor @cornerstonejs/adapters
5.6.8 has a presentation-state adapter. What those libraries do give a viewer is the
parsed object: ``tests/interop/viewer/gsps.mjs`` reads our GSPS with dcmjs and prints
its graphic annotations. Checked here: each outline is a closed POLYLINE in PIXEL units
on the image it names, the points are those pydicom reads, the measurement is a text
object, and the Softcopy VOI LUT covers the images.

Seen on the way: dcmjs 0.52 decodes text inside sequence items (here the text objects)
with the default character repertoire, ignoring the data set's Specific Character Set
ISO_IR 192; the caption's en dash comes out as three Latin-1 characters.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread

from dicom_ai_node.domain import AlgorithmInfo, Code, Measurement, ModelOutput, OutputLabel
from dicom_ai_node.encode import device_uid, encode_profiles
from dicom_ai_node.encode.keyimages import measurement_line
from dicom_ai_node.infer.findings.measure import ML, VOLUME
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import IN_CI
from ..tools import VIEWER_DIR, require_tool

pytestmark = pytest.mark.interop

GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
LUNG = OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), (220, 120, 80))
ALGORITHM = AlgorithmInfo(
    name="lungs",
    version="1.0.0",
    family=Code("123110", "DCM", "Artificial Intelligence"),
    device_uid=device_uid("lungs", "1.0.0"),
)


def read_with_dcmjs(path: Path) -> dict[str, Any]:
    """Run ``gsps.mjs`` on one file; its JSON. Skips without node or the viewer packages
    (fails when ``CI=true``)."""
    node = require_tool("node")
    if not (VIEWER_DIR / "node_modules" / "dcmjs").is_dir():
        message = f"dcmjs not installed: npm ci --prefix {VIEWER_DIR} (scripts/install-tools.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run(
        [node, str(VIEWER_DIR / "gsps.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_dcmjs_reads_the_gsps_outlines_and_measurement(tmp_path: Path) -> None:
    phantom, source = make_ct_series(10, 96, 96, spacing_mm=(5.0, 4.0, 4.0), seed=5)
    label_map = (phantom.labels == 1).astype(np.uint8)
    volume = Measurement(1, VOLUME, float(label_map.sum()) * 0.08, ML)
    output = ModelOutput(labels=(LUNG,), label_map=label_map, measurements=(volume,))
    made = encode_profiles(
        {"GSPS"},
        source,
        output,
        ALGORITHM,
        "job/gsps",
        series_number=700,
        content_datetime=dt.datetime(2026, 12, 8, 10, 30, 0),
        pixels=None,
        reports=[],
        card_summary="lungs 1.0.0",
    )
    assert len(made) == 1
    path = tmp_path / "gsps.dcm"
    made[0].save_as(path, enforce_file_format=True)
    ds = dcmread(path)

    read = read_with_dcmjs(path)

    assert read["sopClassUID"] == GSPS_CLASS and read["modality"] == "PR"
    assert [layer["name"] for layer in read["layers"]] == [
        str(item.GraphicLayer) for item in ds.GraphicLayerSequence
    ]
    source_uids = {str(s.SOPInstanceUID) for s in source}
    outlined = {  # slices with lung voxels: each one gets its outline
        str(source[z].SOPInstanceUID) for z in np.flatnonzero(label_map.any(axis=(1, 2)))
    }
    graphics = [g for a in read["annotations"] for g in a["graphics"]]
    assert graphics, read["annotations"]
    drawn_on: set[str] = set()
    for annotation, item in zip(read["annotations"], ds.GraphicAnnotationSequence, strict=True):
        assert set(annotation["images"]) <= source_uids, annotation["images"]
        for got, want in zip(
            annotation["graphics"], item.get("GraphicObjectSequence", []), strict=True
        ):
            assert got["type"] == "POLYLINE" and got["units"] == "PIXEL", got
            assert got["points"] == int(want.NumberOfGraphicPoints) >= 3
            assert np.allclose(got["data"], [float(v) for v in want.GraphicData]), got
            assert got["data"][:2] == got["data"][-2:], "an outline is closed"
            drawn_on.update(annotation["images"])
    assert drawn_on == outlined
    lines = [
        line for a in read["annotations"] for t in a["texts"] for line in t["text"].split("\r\n")
    ]
    assert measurement_line(volume) in lines, lines
    # the caption's ASCII part only: dcmjs 0.52 decodes text inside sequence items with
    # the default repertoire, not the data set's ISO_IR 192, so its en dash is garbled
    assert any(line.endswith("AI RESULT: lungs 1.0.0") for line in lines), lines
    assert read["voi"] and all(v["width"] and v["width"][0] > 0 for v in read["voi"]), read["voi"]
