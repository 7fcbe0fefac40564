"""Infer: model manifests (``models/<name>/model.toml``), validated when loaded.

A manifest names the model, its version and task, what input it accepts (the router's
:class:`~dicom_ai_node.domain.InputSpec`), its pre- and post-processing, the output labels
with their SNOMED CT / DCM codes (PS3.16), and its weights file.
"""

from __future__ import annotations

import itertools
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


def _code(value: Any, where: str) -> Code:
    if not (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{where}: a code is [value, scheme designator, meaning], got {value!r}")
    return Code(*value)


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
        return self.folder / self.weights

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
                category=_code(item.get("category"), f"{at}.category"),
                type=_code(item.get("type"), f"{at}.type"),
                color_rgb=(color[0], color[1], color[2]),
                laterality=_code(item["laterality"], f"{at}.laterality")
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


_RATIO_KEYS = {"label", "numerator", "denominator", "code"}


def _grades(grades: Any, at: str) -> None:
    """A ratio's ``grades``: {code, below}, ``below`` strictly decreasing band edges."""
    if not isinstance(grades, dict) or set(grades) != {"code", "below"}:
        raise ConfigError(f"{at}.grades: needs exactly code and below")
    _code(grades["code"], f"{at}.grades.code")
    edges = grades["below"]
    if (
        not isinstance(edges, list)
        or not edges
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in edges)
        or any(b >= a for a, b in itertools.pairwise(edges))
    ):
        raise ConfigError(f"{at}.grades.below: a list of numbers, strictly decreasing")


def _ratios(items: Any, where: str) -> list[dict[str, Any]]:
    """``postprocess.ratios``: each {label, numerator, denominator, code} and optionally
    ``grades`` (a grade code and the band edges the ratio falls below, see
    :func:`.findings.measure.ratio_measurements`)."""
    if not isinstance(items, list):
        raise ConfigError(f"{where}: postprocess.ratios is a list of tables")
    out = []
    for i, item in enumerate(items):
        at = f"{where} postprocess.ratios[{i}]"
        if not isinstance(item, dict) or not (_RATIO_KEYS <= set(item) <= _RATIO_KEYS | {"grades"}):
            raise ConfigError(
                f"{at}: needs exactly label, numerator, denominator and code (and may have grades)"
            )
        for key in ("numerator", "denominator"):
            if not isinstance(item[key], list) or not all(isinstance(v, int) for v in item[key]):
                raise ConfigError(f"{at}.{key}: a list of label values")
        _code(item["code"], f"{at}.code")
        if "grades" in item:
            _grades(item["grades"], at)
        out.append(dict(item))
    return out


def _postprocess(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(data)
    if "measurements" in out:
        out["measurements"] = list(_measurements(out["measurements"], f"{where} postprocess"))
    if "ratios" in out:
        out["ratios"] = _ratios(out["ratios"], where)
    return out


#: Tasks a manifest may declare; ``body-region`` is the router's own model.
TASKS = ("segmentation", "classification", "body-region")


def _check_classification(manifest: ModelManifest, where: str) -> None:
    """A classifier's post-processing: ``threshold`` in (0, 1), ``saliency`` true/false,
    ``"occlusion"`` or ``"grad-cam"`` (with ``saliency_layer``),
    ``activation`` sigmoid (one probability per label) or softmax (labels exclusive)."""
    post = manifest.postprocess
    threshold = post.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise ConfigError(f"{where}: postprocess.threshold must be in (0, 1), got {threshold!r}")
    saliency = post.get("saliency", False)
    if saliency not in (True, False, "occlusion", "grad-cam"):
        raise ConfigError(
            f'{where}: postprocess.saliency is true, false, "occlusion" or "grad-cam"'
        )
    layer = post.get("saliency_layer")
    if saliency == "grad-cam" and (not isinstance(layer, int) or layer < 0):
        raise ConfigError(f'{where}: saliency = "grad-cam" needs saliency_layer, an index')
    if post.get("activation", "sigmoid") not in ("sigmoid", "softmax"):
        raise ConfigError(f"{where}: postprocess.activation is sigmoid or softmax")
    if not manifest.labels:
        raise ConfigError(f"{where}: a classification model needs at least one label")


def _check_preprocess(manifest: ModelManifest, where: str) -> None:
    """``geometry`` volume, projection or cine, ``require_calibration`` (projection only),
    ``intensity`` "percentile" with its ``intensity_ceiling``, tiling (``tile``,
    ``pixel_mm``, ``tile_overlap``) and 2.5-D input (``context_mm``)."""
    pre = manifest.preprocess
    if pre.get("geometry", "volume") not in ("volume", "projection", "cine"):
        raise ConfigError(f"{where}: preprocess.geometry is volume, projection or cine")
    if pre.get("geometry") == "cine" and manifest.task != "segmentation":
        raise ConfigError(f'{where}: geometry = "cine" is for segmentation models')
    if not isinstance(pre.get("require_calibration", False), bool):
        raise ConfigError(f"{where}: preprocess.require_calibration is true or false")
    if pre.get("require_calibration") and not manifest.projection:
        raise ConfigError(
            f'{where}: preprocess.require_calibration needs geometry = "projection" '
            "(a volume always needs Pixel Spacing)"
        )
    if pre.get("intensity", "percentile") != "percentile":
        raise ConfigError(f'{where}: preprocess.intensity can only be "percentile"')
    ceiling = pre.get("intensity_ceiling", 1.0)
    if not isinstance(ceiling, int | float) or isinstance(ceiling, bool) or ceiling < 1:
        raise ConfigError(f"{where}: preprocess.intensity_ceiling is a number of 1 or more")
    if "intensity_ceiling" in pre and pre.get("intensity") != "percentile":
        raise ConfigError(f'{where}: preprocess.intensity_ceiling needs intensity = "percentile"')
    if not isinstance(pre.get("tile", False), bool):
        raise ConfigError(f"{where}: preprocess.tile is true or false")
    pixel_mm = pre.get("pixel_mm", 1.0)
    if not isinstance(pixel_mm, int | float) or pixel_mm <= 0:
        raise ConfigError(f"{where}: preprocess.pixel_mm is a size in mm above 0")
    overlap = pre.get("tile_overlap", 0.25)
    if not isinstance(overlap, int | float) or not 0 <= overlap < 0.9:
        raise ConfigError(f"{where}: preprocess.tile_overlap is in [0, 0.9)")
    context = pre.get("context_mm", 1.0)
    if not isinstance(context, int | float) or isinstance(context, bool) or context <= 0:
        raise ConfigError(f"{where}: preprocess.context_mm is a distance in mm above 0")
    if "context_mm" in pre and (
        manifest.task != "segmentation"
        or pre.get("geometry", "volume") != "volume"
        or pre.get("tile")
    ):
        raise ConfigError(
            f"{where}: preprocess.context_mm (2.5-D input) is for segmentation of volumes, "
            "not tiled, cine or projection models"
        )


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
        algorithm_family=_code(data["algorithm_family"], f"{where}.algorithm_family")
        if "algorithm_family" in data
        else AI_FAMILY,
        entry_point=str(data.get("entry_point", "")),
        series_number=_series_number(data.get("series_number"), where),
    )
    if manifest.task not in TASKS:
        raise ConfigError(f"{where}: task {manifest.task!r} is not one of {list(TASKS)}")
    _check_preprocess(manifest, where)
    values = {label.value for label in manifest.labels}
    for ratio in manifest.postprocess.get("ratios", []):
        used = {ratio["label"], *ratio["numerator"], *ratio["denominator"]}
        if not used <= values:
            raise ConfigError(f"{where}: postprocess.ratios names labels {sorted(used - values)}")
    if manifest.task == "classification":
        _check_classification(manifest, where)
    if not manifest.weights_path.exists():  # a file, or a folder (a MONAI bundle)
        raise ConfigError(f"{where}: weights file or folder {manifest.weights} not found")
    return manifest
