"""Infer: the checks of a model manifest that look at more than one key.

Ratios, totals and grades of ``[postprocess]``, the pre-processing options, and what a
classification or a brain-extraction model needs; :func:`.manifest.load_manifest` calls
them, so that a manifest is valid once loaded.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..domain import Code
from ..errors import ConfigError

if TYPE_CHECKING:
    from .manifest import ModelManifest

__all__ = [
    "check_brain_extraction",
    "check_classification",
    "check_preprocess",
    "check_references",
    "parse_code",
    "parse_ratios",
    "parse_totals",
]


def parse_code(value: Any, where: str) -> Code:
    """A coded concept written as [value, scheme designator, meaning] (PS3.3 8.8)."""
    if not (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{where}: a code is [value, scheme designator, meaning], got {value!r}")
    return Code(*value)


_RATIO_KEYS = {"label", "numerator", "denominator", "code"}


def _grades(grades: Any, at: str) -> None:
    """A ratio's ``grades``: {code, below}, ``below`` strictly decreasing band edges."""
    if not isinstance(grades, dict) or set(grades) != {"code", "below"}:
        raise ConfigError(f"{at}.grades: needs exactly code and below")
    parse_code(grades["code"], f"{at}.grades.code")
    edges = grades["below"]
    if (
        not isinstance(edges, list)
        or not edges
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in edges)
        or any(b >= a for a, b in itertools.pairwise(edges))
    ):
        raise ConfigError(f"{at}.grades.below: a list of numbers, strictly decreasing")


def parse_ratios(items: Any, where: str) -> list[dict[str, Any]]:
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
        parse_code(item["code"], f"{at}.code")
        if "grades" in item:
            _grades(item["grades"], at)
        out.append(dict(item))
    return out


_TOTAL_KEYS = {"label", "labels", "code"}


def parse_totals(items: Any, where: str) -> list[dict[str, Any]]:
    """``postprocess.totals``: each {label, labels, code}, the volume of ``labels``
    together reported in ``label``'s SR group (:func:`.findings.measure.total_measurements`)."""
    if not isinstance(items, list):
        raise ConfigError(f"{where}: postprocess.totals is a list of tables")
    out = []
    for i, item in enumerate(items):
        at = f"{where} postprocess.totals[{i}]"
        if not isinstance(item, dict) or set(item) != _TOTAL_KEYS:
            raise ConfigError(f"{at}: needs exactly label, labels and code")
        labels = item["labels"]
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(v, int) for v in labels)
        ):
            raise ConfigError(f"{at}.labels: a list of label values")
        if not isinstance(item["label"], int):
            raise ConfigError(f"{at}.label: a label value")
        parse_code(item["code"], f"{at}.code")
        out.append(dict(item))
    return out


def check_brain_extraction(manifest: ModelManifest, where: str) -> None:
    """``task = "brain-extraction"``: two labels (1 parenchyma, 2 CSF), the bounding-box
    network's file (``preprocess.bbox_weights``) and ``preprocess.bf16`` true/false."""
    if len(manifest.labels) != 2:
        raise ConfigError(f"{where}: a brain-extraction model has two labels (parenchyma, CSF)")
    if not isinstance(manifest.preprocess.get("bbox_weights"), str):
        raise ConfigError(
            f"{where}: preprocess.bbox_weights (the bounding-box network) is required"
        )
    if not isinstance(manifest.preprocess.get("bf16", True), bool):
        raise ConfigError(f"{where}: preprocess.bf16 is true or false")


def check_classification(manifest: ModelManifest, where: str) -> None:
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


def check_preprocess(manifest: ModelManifest, where: str) -> None:
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


def check_references(manifest: ModelManifest, where: str) -> None:
    """Every label a ratio or a total names is one of the manifest's labels."""
    values = {label.value for label in manifest.labels}
    for ratio in manifest.postprocess.get("ratios", []):
        used = {ratio["label"], *ratio["numerator"], *ratio["denominator"]}
        if not used <= values:
            raise ConfigError(f"{where}: postprocess.ratios names labels {sorted(used - values)}")
    for total in manifest.postprocess.get("totals", []):
        used = {total["label"], *total["labels"]}
        if not used <= values:
            raise ConfigError(f"{where}: postprocess.totals names labels {sorted(used - values)}")
