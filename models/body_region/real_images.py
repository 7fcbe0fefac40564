"""Run the body-region model on the real CT images that pydicom and pydicom-data ship.

Prints one line per image: file, the region its headers give (if any), the model's
answer and confidence. The truth column of MODEL_CARD.md comes from looking at each
image. Usage::

    python models/body_region/real_images.py [--model models/body_region]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from dicom_ai_node.infer.bodyregion import BodyRegionModel  # noqa: E402
from dicom_ai_node.infer.manifest import load_manifest  # noqa: E402
from dicom_ai_node.infer.runner import Device  # noqa: E402

FILES = ("693_UNCI.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm", "CT_small.dcm")


def _path(name: str) -> Path | None:
    found = get_testdata_file(name)
    if found is not None:
        return Path(found)
    try:
        import data_store  # pydicom-data
    except ImportError:
        return None
    return next((Path(data_store.__file__).parent / "data").rglob(name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=HERE)
    args = parser.parse_args(argv)
    model = BodyRegionModel(load_manifest(args.model / "model.toml"), Device("cpu"))
    for name in FILES:
        path = _path(name)
        if path is None:
            print(f"{name}: not installed (pip install pydicom-data)")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some of these files are broken on purpose
            ds = dcmread(path)
            pixels = ds.pixel_array
        hu = pixels.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        region, confidence = model.classify([hu])
        header = ds.get("BodyPartExamined") or ds.get("StudyDescription") or "-"
        print(f"{name}: header {header!s}, model {region.value} ({confidence:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
