"""Infer: point-like findings grouped into clusters (microcalcifications on mammograms).

A label listed in ``postprocess.clusters`` marks tiny findings (each calcification a few
pixels). Each image's 8-connected specks are found and their centres grouped by single
linkage: two specks closer than ``distance_mm`` are in the same group (BI-RADS calls
calcifications "grouped" within about 1 cm). Groups of at least ``min_count`` specks are
reported as clusters, "<cluster name> 1", "<cluster name> 2" ... (most specks first):
each cluster's label (its segmented property type ``type``, e.g. Calcification Cluster,
129769006 SCT) covers the convex hull of its specks grown by ``margin_mm``, outside
the specks themselves, which keep their label, so the SEG shows both the specks and the
cluster's extent, and the SR has one group per cluster outlined by that hull.

Per cluster: the Number of calcifications (private code CALCCOUNT, 99DAIN; unit "1")
and the cluster's long axis (Long Axis, 103339001 SCT, mm). The speck label reports the
number of specks found on the image in all. Numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ...domain import Code, Measurement, ModelOutput, OutputLabel, Volume
from ...errors import ConfigError
from ...geometry import components, convex_hull, max_feret_diameter_mm
from ..manifest import ModelManifest
from .measure import LONG_AXIS, MM, NO_UNITS

__all__ = ["CALCIFICATION_COUNT", "ClusterRules", "cluster_output", "single_linkage"]

CALCIFICATION_COUNT = Code("CALCCOUNT", "99DAIN", "Number of calcifications")
#: At most this many specks per image are grouped (the rest are counted only).
_MAX_SPECKS = 2000


@dataclasses.dataclass(frozen=True)
class ClusterRules:
    """``postprocess.clusters``: which label, and how its specks are grouped."""

    label: int
    name: str = "Calcification cluster"
    distance_mm: float = 5.0
    min_count: int = 3
    margin_mm: float = 1.0
    max_clusters: int = 10
    type: Code | None = None

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> ClusterRules | None:
        """The rules, or ``None`` when the manifest has none.

        Raises
        ------
        ConfigError
            When a value is missing or out of range.
        """
        data: Mapping[str, Any] | None = manifest.postprocess.get("clusters")
        if data is None:
            return None
        try:
            rules = cls(
                label=int(data["label"]),
                name=str(data.get("name", cls.name)),
                distance_mm=float(data.get("distance_mm", cls.distance_mm)),
                min_count=int(data.get("min_count", cls.min_count)),
                margin_mm=float(data.get("margin_mm", cls.margin_mm)),
                max_clusters=int(data.get("max_clusters", cls.max_clusters)),
                type=Code(*data["type"]) if "type" in data else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"model {manifest.name}: postprocess.clusters: {exc}") from exc
        if rules.label not in {label.value for label in manifest.labels}:
            raise ConfigError(f"model {manifest.name}: postprocess.clusters.label names no label")
        if rules.distance_mm <= 0 or rules.min_count < 1 or rules.max_clusters < 1:
            raise ConfigError(f"model {manifest.name}: postprocess.clusters out of range")
        return rules


def single_linkage(points: npt.NDArray[np.float64], distance: float) -> list[list[int]]:
    """Groups of point indices joined by steps shorter than ``distance`` (union-find)."""
    parent = list(range(len(points)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(points) > 1:
        gaps = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
        for i, j in zip(*np.nonzero(np.triu(gaps < distance, k=1)), strict=True):
            parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for k in range(len(points)):
        groups.setdefault(find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def _hull_mask(
    pixels: npt.NDArray[np.int64], shape: tuple[int, int], margin_px: tuple[float, float]
) -> npt.NDArray[np.bool_]:
    """Pixels within the convex hull of ``pixels`` (rows, columns) grown by ``margin_px``."""
    lo = np.maximum(pixels.min(axis=0) - np.ceil(margin_px).astype(int) - 1, 0)
    hi = np.minimum(pixels.max(axis=0) + np.ceil(margin_px).astype(int) + 2, shape)
    rr, cc = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]
    out = np.zeros(shape, bool)
    # grow the points into small discs (the margin), then test against the hull of those
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    grown = np.concatenate(
        [pixels + np.stack([np.sin(a) * margin_px[0], np.cos(a) * margin_px[1]]) for a in angles]
        + [pixels.astype(np.float64)]
    )
    hull = convex_hull(grown)  # counter-clockwise in (row, column)
    inside = np.ones(rr.shape, bool)
    if len(hull) >= 3:
        for (r0, c0), (r1, c1) in zip(hull, np.roll(hull, -1, axis=0), strict=True):
            inside &= (r1 - r0) * (cc - c0) - (c1 - c0) * (rr - r0) >= -1e-9
    out[lo[0] : hi[0], lo[1] : hi[1]] = inside
    return out


def cluster_output(
    manifest: ModelManifest,
    rules: ClusterRules,
    label_map: npt.NDArray[np.uint8],
    volume: Volume,
) -> ModelOutput:
    """The model output of a label map whose ``rules.label`` marks specks.

    Parameters
    ----------
    manifest:
        The labels.
    rules:
        What :meth:`ClusterRules.from_manifest` read.
    label_map:
        (images, rows, columns) uint8; cluster regions are written into it, after the
        manifest's label values.
    volume:
        Gives the pixel spacing (each image is on its own, projection geometry).
    """
    speck = next(label for label in manifest.labels if label.value == rules.label)
    _, row_mm, column_mm = volume.spacing_mm
    next_value = max(label.value for label in manifest.labels) + 1
    labels: list[OutputLabel] = [label for label in manifest.labels if label.value != speck.value]
    measurements: list[Measurement] = []
    total = reported = 0
    for k in range(label_map.shape[0]):
        found = components(label_map[k : k + 1] == speck.value)
        total += len(found)
        centres = np.array(
            [
                [
                    (box[1].start + np.argwhere(m[0])[:, 0].mean()) * row_mm,
                    (box[2].start + np.argwhere(m[0])[:, 1].mean()) * column_mm,
                ]
                for box, m in found[:_MAX_SPECKS]
            ]
        ).reshape(-1, 2)
        groups = [
            g for g in single_linkage(centres, rules.distance_mm) if len(g) >= rules.min_count
        ]
        for group in groups:
            if reported >= rules.max_clusters or next_value > 255:
                break
            reported += 1
            pixels = np.concatenate(
                [
                    np.argwhere(found[i][1][0])
                    + np.array([found[i][0][1].start, found[i][0][2].start])
                    for i in group
                ]
            )
            region = _hull_mask(
                pixels, label_map.shape[1:], (rules.margin_mm / row_mm, rules.margin_mm / column_mm)
            )
            plane = label_map[k]
            plane[region & (plane != speck.value)] = next_value
            labels.append(
                dataclasses.replace(
                    speck,
                    value=next_value,
                    name=f"{rules.name} {reported}",
                    type=rules.type or speck.type,
                )
            )
            measurements.append(
                Measurement(next_value, CALCIFICATION_COUNT, float(len(group)), NO_UNITS)
            )
            measurements.append(
                Measurement(
                    next_value, LONG_AXIS, max_feret_diameter_mm(region, row_mm, column_mm), MM
                )
            )
            next_value += 1
    labels.insert(0, speck)
    measurements.insert(0, Measurement(speck.value, CALCIFICATION_COUNT, float(total), NO_UNITS))
    return ModelOutput(labels=tuple(labels), label_map=label_map, measurements=tuple(measurements))
