"""Run the body-region models on the real CT, MR and radiograph images of pydicom(-data).

Prints one line per image: file, the region its headers give (if any), the answer of
the body-region model of its modality (as the node reads the file: Modality LUT,
MONOCHROME1 inverted) and its confidence. The truth columns of the model cards
(``models/body_region``, ``models/mr_body_region``, ``models/xr_body_region``) come from
looking at each image. Usage (from the repository's root)::

    python -m models.body_region.real_images [--models models]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device

HERE = Path(__file__).resolve().parent

FILES = (
    "693_UNCI.dcm",
    "bad_sequence.dcm",
    "explicit_VR-UN.dcm",
    "CT_small.dcm",
    "MR_small.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "MR2_UNCI.dcm",
    "emri_small.dcm",
    "RG1_UNCI.dcm",
    "RG3_UNCI.dcm",
)


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
    parser.add_argument("--models", type=Path, default=HERE.parent)
    args = parser.parse_args(argv)
    models = ModelRegistry(args.models, Device("cpu")).body_region_model()
    assert models is not None, f"no body-region model in {args.models}"
    for name in FILES:
        path = _path(name)
        if path is None:
            print(f"{name}: not installed (pip install pydicom-data)")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some of these files are broken on purpose
            ds = dcmread(path, stop_before_pixels=True)
            answer = models.classify_files([path])
        header = ds.get("BodyPartExamined") or ds.get("StudyDescription") or "-"
        found = "no answer" if answer is None else f"{answer[0].value} ({answer[1]:.2f})"
        print(f"{name}: {ds.get('Modality')}, header {header!s}, model {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
