"""Infer: model manifests (``models/<name>/model.toml``), validated when loaded.

A manifest names the model, its version and task, what input it accepts (the router's
:class:`~dicom_ai_node.domain.InputSpec`), its pre- and post-processing, the output labels
with their SNOMED CT / DCM codes (PS3.16), and its weights file: in the model's folder, or
inside an installed Python distribution (``package``, :mod:`.package`), in which case the
model is unavailable (not an error) while that distribution is not installed.
"""

from __future__ import annotations

import re
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..domain import AlgorithmInfo, BodyPart, Code, InputSpec, OutputLabel, Scope, parse_enum
from ..errors import ConfigError
from ..identity import MANUFACTURER
from .manifest_checks import (
    check_brain_extraction,
    check_classification,
    check_preprocess,
    check_references,
    parse_code,
    parse_ratios,
    parse_totals,
)
from .package import package_root, package_version

__all__ = [
    "MEASUREMENTS",
    "SERIES_NUMBER_BLOCK",
    "TASKS",
    "ModelManifest",
    "default_series_number",
    "load_manifest",
]

# PS3.16 CID 7162 (Algorithm Family): "Artificial Intelligence"
AI_FAMILY = Code("123110", "DCM", "Artificial Intelligence")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: A distribution name (PEP 508 names).
_PACKAGE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_TOP_KEYS = {
    "name",
    "version",
    "task",
    "runner",
    "weights",
    "description",
    "intended_use",
    "input",
    "preprocess",
    "postprocess",
    "labels",
    "algorithm_family",
    "entry_point",
    "series_number",
    "package",
    "package_version",
}
_INPUT_KEYS = {
    "modalities",
    "body_parts",
    "sop_class_uids",
    "min_slices",
    "max_slices",
    "slice_thickness_mm",
    "require_axial",
    "require_original",
    "require_pixel_spacing",
    "scope",
}


@dataclass(frozen=True)
class ModelManifest:
    """A model as declared by its ``model.toml``."""

    name: str
    version: str
    task: str
    runner: str
    folder: Path
    weights: str
    description: str
    intended_use: str
    input: InputSpec
    labels: tuple[OutputLabel, ...]
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    algorithm_family: Code = AI_FAMILY
    entry_point: str = ""
    #: First Series Number of the model's results (see :data:`SERIES_NUMBER_BLOCK`).
    series_number: int = 0
    #: The installed distribution (``importlib.metadata`` name) that holds the weights;
    #: empty when they are in :attr:`folder`.
    package: str = ""
    #: The version of :attr:`package` the model's code follows (its preprocessing, its
    #: networks' contract); another installed version makes the model unavailable.
    package_version: str = ""

    def __post_init__(self) -> None:
        if self.series_number == 0:
            object.__setattr__(self, "series_number", default_series_number(self.name))

    @property
    def projection(self) -> bool:
        """Whether the inputs are single projection or ultrasound images without slice
        geometry (``preprocess.geometry = "projection"``)."""
        return self.preprocess.get("geometry") == "projection"

    @property
    def cine(self) -> bool:
        """Whether the inputs are cine series (``preprocess.geometry = "cine"``): each
        position's phases go through the network together, in time order."""
        return self.preprocess.get("geometry") == "cine"

    @property
    def require_calibration(self) -> bool:
        """Whether a projection image must state its pixel size
        (``preprocess.require_calibration``): the model measures in mm."""
        return bool(self.preprocess.get("require_calibration", False))

    @property
    def weights_path(self) -> Path:
        """Absolute path of the weights file."""
        return self.resolve(self.weights)

    def resolve(self, relative: str) -> Path:
        """A file the manifest names: inside the installed :attr:`package` when it names
        one (and it is installed), else in the model's folder."""
        root = package_root(self.package) if self.package else None
        return (root if root is not None else self.folder) / relative

    @property
    def unavailable(self) -> str:
        """Why the model cannot run here (its package or a file of it missing); empty
        when it can. Checked when the registry loads the manifests."""
        if not self.package:
            return ""
        if package_root(self.package) is None:
            return f"the Python package {self.package!r} is not installed"
        installed = package_version(self.package)
        if self.package_version and installed != self.package_version:
            return (
                f"the Python package {self.package!r} is version {installed}; "
                f"this model follows version {self.package_version}"
            )
        files = [
            self.weights,
            *([self.preprocess["bbox_weights"]] if "bbox_weights" in self.preprocess else []),
        ]
        missing = [f for f in files if not self.resolve(f).is_file()]
        if missing:
            return f"the package {self.package!r} has no {', '.join(missing)}"
        return ""

    def algorithm(self, device_uid: str) -> AlgorithmInfo:
        """The identification encoders put in results (TID 4019)."""
        return AlgorithmInfo(
            name=self.name,
            version=self.version,
            family=self.algorithm_family,
            device_uid=device_uid,
            manufacturer=MANUFACTURER,
            intended_use=self.intended_use,
        )


#: Series Numbers each model has for its results: revision ``r`` of a model whose
#: ``series_number`` is ``n`` gets ``n + 10 r`` (SEG), ``+ 1`` (SR), ``+ 2`` (findings SR),
#: revisions from the tenth on sharing the last ten (encode.result_series_number).
SERIES_NUMBER_BLOCK = 100
#: The highest ``series_number`` a manifest may give: its block stays within IS (PS3.5).
MAX_SERIES_NUMBER = 2**31 - 1 - SERIES_NUMBER_BLOCK


def default_series_number(name: str) -> int:
    """A model's first result Series Number when its manifest gives none: from its name.

    In 20000-919900, away from the numbers modalities use; two models whose blocks
    overlap are refused at start-up (set ``series_number`` in one of them).
    """
    return 20000 + SERIES_NUMBER_BLOCK * (zlib.crc32(name.encode("utf-8")) % 9000)


def _series_number(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SERIES_NUMBER:
        raise ConfigError(f"{where}: series_number is a whole number in 1..{MAX_SERIES_NUMBER}")
    return value


def _input_spec(data: Mapping[str, Any], where: str) -> InputSpec:
    unknown = set(data) - _INPUT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown [input] keys {sorted(unknown)}")
    thickness = data.get("slice_thickness_mm")
    if thickness is not None and (len(thickness) != 2 or thickness[0] > thickness[1]):
        raise ConfigError(f"{where}: slice_thickness_mm must be [min, max]")
    try:
        return InputSpec(
            modalities=frozenset(str(m).upper() for m in data.get("modalities", [])),
            body_parts=frozenset(parse_enum(BodyPart, b) for b in data.get("body_parts", [])),
            sop_class_uids=frozenset(str(u) for u in data.get("sop_class_uids", [])),
            min_slices=data.get("min_slices"),
            max_slices=data.get("max_slices"),
            slice_thickness_mm=(float(thickness[0]), float(thickness[1])) if thickness else None,
            require_axial=bool(data.get("require_axial", False)),
            require_original=bool(data.get("require_original", False)),
            require_pixel_spacing=bool(data.get("require_pixel_spacing", False)),
            scope=parse_enum(Scope, data.get("scope", "series")),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


#: What a segmentation runner can measure per label (infer/tasks/segment.py,
#: infer/findings/lesions.py).
MEASUREMENTS = (
    "volume",
    "long_axis",
    "mean_hu",
    "short_axis",
    "area",
    "depth_to_width",
    "solidity",
)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: true or false, got {value!r}")
    return value


def _measurements(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(v not in MEASUREMENTS for v in value):
        raise ConfigError(f"{where}: a list of {list(MEASUREMENTS)}, got {value!r}")
    return tuple(value)


def _labels(items: list[Mapping[str, Any]], where: str) -> tuple[OutputLabel, ...]:
    labels = []
    for i, item in enumerate(items):
        at = f"{where} labels[{i}]"
        color = item.get("color", [255, 0, 0])
        if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
            raise ConfigError(f"{at}: color must be [R, G, B] in 0..255")
        labels.append(
            OutputLabel(
                value=int(item["value"]),
                name=str(item["name"]),
                category=parse_code(item.get("category"), f"{at}.category"),
                type=parse_code(item.get("type"), f"{at}.type"),
                color_rgb=(color[0], color[1], color[2]),
                laterality=parse_code(item["laterality"], f"{at}.laterality")
                if "laterality" in item
                else None,
                measurements=_measurements(item.get("measurements", []), f"{at}.measurements"),
                instances=_flag(item.get("instances", False), f"{at}.instances"),
            )
        )
    values = [label.value for label in labels]
    if sorted(values) != list(range(1, len(values) + 1)):
        raise ConfigError(f"{where}: label values must be 1..N without gaps, got {values}")
    return tuple(labels)


#: Tasks a manifest may declare; ``body-region`` is the router's own model.
TASKS = ("segmentation", "classification", "body-region", "brain-extraction")


def _postprocess(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(data)
    if "measurements" in out:
        out["measurements"] = list(_measurements(out["measurements"], f"{where} postprocess"))
    if "ratios" in out:
        out["ratios"] = parse_ratios(out["ratios"], where)
    if "totals" in out:
        out["totals"] = parse_totals(out["totals"], where)
    return out


def _package(value: Any, where: str) -> str:
    if not isinstance(value, str) or (value and not _PACKAGE.match(value)):
        raise ConfigError(f"{where}: package is the name of an installed Python distribution")
    return value


def _package_version(data: Mapping[str, Any], where: str) -> str:
    value = data.get("package_version", "")
    if not isinstance(value, str) or (value and not data.get("package")):
        raise ConfigError(f"{where}: package_version is a version string of the package named")
    return value


def load_manifest(path: Path) -> ModelManifest:
    """Read and validate a ``model.toml``.

    Parameters
    ----------
    path:
        The manifest file; its folder holds the weights.

    Raises
    ------
    ConfigError
        Naming the file and key that is wrong.
    """
    where = str(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read manifest: {exc}") from exc
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("name", "version", "task", "runner", "weights"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{where}: '{key}' is required and must be a string")
    if not _NAME.match(data["name"]):
        raise ConfigError(f"{where}: name {data['name']!r} must match {_NAME.pattern}")
    if len(data["version"]) > 32:  # the index keeps it in 32 characters (store/tables.py)
        raise ConfigError(f"{where}: version {data['version']!r} is longer than 32 characters")
    manifest = ModelManifest(
        name=data["name"],
        version=data["version"],
        task=data["task"],
        runner=data["runner"],
        folder=path.parent.resolve(),
        weights=data["weights"],
        description=str(data.get("description", "")),
        intended_use=str(data.get("intended_use", "")),
        input=_input_spec(data.get("input", {}), where),
        labels=_labels(data.get("labels", []), where),
        preprocess=dict(data.get("preprocess", {})),
        postprocess=_postprocess(data.get("postprocess", {}), where),
        algorithm_family=parse_code(data["algorithm_family"], f"{where}.algorithm_family")
        if "algorithm_family" in data
        else AI_FAMILY,
        entry_point=str(data.get("entry_point", "")),
        series_number=_series_number(data.get("series_number"), where),
        package=_package(data.get("package", ""), where),
        package_version=_package_version(data, where),
    )
    if manifest.task not in TASKS:
        raise ConfigError(f"{where}: task {manifest.task!r} is not one of {list(TASKS)}")
    check_preprocess(manifest, where)
    check_references(manifest, where)
    if manifest.task == "classification":
        check_classification(manifest, where)
    if manifest.task == "brain-extraction":
        check_brain_extraction(manifest, where)
    if manifest.package:  # the registry reports a missing package: the model is unavailable
        return manifest
    if not manifest.weights_path.exists():  # a file, or a folder (a MONAI bundle)
        raise ConfigError(f"{where}: weights file or folder {manifest.weights} not found")
    return manifest
