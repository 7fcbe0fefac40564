"""Infer: a segmentation's lesion labels split into one label per connected region.

A manifest label with ``instances = true`` (a nodule, a tumour, an aneurysm) is not
reported as one region: each 26-connected region of it becomes a label of its own,
``"<name> 1"``, ``"<name> 2"`` ... (largest first), so the encoders give each its own
SEG segment and SR measurement group with its own Tracking UID (PS3.16 TID 1410, 1411),
as a radiologist reports nodules one by one.

With ``postprocess.vote_instances = true`` the lesion labels are the classes of one kind
of finding (a cyst, a haemangioma, a metastasis): first every connected region of them
taken together gets the class most of its voxels have, so that one lesion is one label.

Each region's location is the other label that surrounds it most (e.g. *Right lung*):
it becomes the region's Finding Site (TID 1419). Regions the manifest rules out
(``postprocess``: ``min_instance_mm3``, ``min_instance_mm2``, ``max_instance_elongation``,
``max_instance_flatness``, ``max_instances``)
are given to that surrounding label, so a rejected candidate inside a lung stays lung.
Numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ...domain import Measurement, ModelOutput, OutputLabel, Volume
from ...errors import ConfigError
from ...geometry import Component, components
from ..manifest import ModelManifest
from .measure import (
    label_measurements,
    long_axis_mm,
    ratio_measurements,
    region_measurements,
    total_measurements,
)

__all__ = ["InstanceRules", "segmentation_output"]

#: Label values are uint8 (PS3.3 C.8.20.2 allows 65535 segments; the label map does not).
_MAX_VALUE = 255
#: Voxels around a region that decide where it is.
_MARGIN = (1, 3, 3)
#: The same for separate images (projection geometry): nothing from the next image.
_IMAGE_MARGIN = (0, 3, 3)


@dataclasses.dataclass(frozen=True)
class InstanceRules:
    """Which connected regions of a lesion label are reported (manifest ``postprocess``).

    Attributes
    ----------
    min_mm3:
        ``min_instance_mm3``: smaller regions are not reported (0: all).
    min_mm2:
        ``min_instance_mm2``: regions whose largest cross-section (on any one slice) is
        smaller are not reported (0: all); the size rule of a single projection or
        ultrasound image, which has no volume.
    max_elongation:
        ``max_instance_elongation``: a region whose extent across slices (centre of its
        first slice to centre of its last) is more than this many times its in-plane long
        axis is not reported (a vessel running through the slices looks like a nodule on
        each one); ``None``: no limit.
    max_flatness:
        ``max_instance_flatness``: a region whose in-plane long axis is more than this
        many times the thickness of the slices it covers is not reported (a lesion of
        that size would show on more slices); ``None``: no limit.
    max_count:
        ``max_instances``: at most this many regions per label, the largest.
    """

    min_mm3: float = 0.0
    min_mm2: float = 0.0
    max_elongation: float | None = None
    max_flatness: float | None = None
    max_count: int = 20

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> InstanceRules:
        """Read and check the rules.

        Raises
        ------
        ConfigError
            When a value is not a number in range.
        """
        post: Mapping[str, Any] = manifest.postprocess

        def limit(key: str) -> float | None:
            return float(post[key]) if key in post else None

        try:
            rules = cls(
                min_mm3=float(post.get("min_instance_mm3", 0.0)),
                min_mm2=float(post.get("min_instance_mm2", 0.0)),
                max_elongation=limit("max_instance_elongation"),
                max_flatness=limit("max_instance_flatness"),
                max_count=int(post.get("max_instances", 20)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model {manifest.name}: postprocess: {exc}") from exc
        limits = (rules.max_elongation or 1, rules.max_flatness or 1)
        if min(rules.min_mm3, rules.min_mm2) < 0 or rules.max_count < 1 or min(limits) <= 0:
            raise ConfigError(f"model {manifest.name}: postprocess: instance limits out of range")
        return rules


def _regions(mask: npt.NDArray[np.bool_], separate_images: bool) -> list[Component]:
    """Connected regions: 26-connected through a volume, or 8-connected within each
    image when the images are separate pictures (projection geometry), so that nodules
    on two ultrasound images of a series are never joined into one."""
    if not separate_images:
        return components(mask)
    out: list[Component] = []
    for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)).tolist():
        for (_, rows, cols), local in components(mask[k : k + 1]):
            out.append(((slice(k, k + 1), rows, cols), local))
    return out


def _surrounding(
    label_map: npt.NDArray[np.uint8],
    box: tuple[slice, slice, slice],
    sites: list[int],
    separate_images: bool,
) -> int:
    """Which of ``sites`` has most voxels in ``box`` grown by :data:`_MARGIN`; 0: none."""
    margin = _IMAGE_MARGIN if separate_images else _MARGIN
    grown = tuple(
        slice(max(0, s.start - m), min(n, s.stop + m))
        for s, m, n in zip(box, margin, label_map.shape, strict=True)
    )
    counts = np.bincount(label_map[grown].ravel(), minlength=_MAX_VALUE + 1)[sites]
    best = int(np.argmax(counts)) if len(sites) else 0
    return sites[best] if len(sites) and counts[best] else 0


def _shape_ok(component: Component, volume: Volume, rules: InstanceRules) -> bool:
    """Whether a region's extent across slices fits its in-plane size (see the rules)."""
    if rules.max_elongation is None and rules.max_flatness is None:
        return True
    box, mask = component
    slice_mm, row_mm, column_mm = volume.spacing_mm
    slices = box[0].stop - box[0].start
    axis = max(long_axis_mm(mask, row_mm, column_mm), min(row_mm, column_mm))
    if rules.max_elongation is not None and (slices - 1) * slice_mm > rules.max_elongation * axis:
        return False
    return rules.max_flatness is None or axis <= rules.max_flatness * slices * slice_mm


def _split(
    label: OutputLabel,
    label_map: npt.NDArray[np.uint8],
    volume: Volume,
    rules: InstanceRules,
    next_value: int,
    by_value: Mapping[int, OutputLabel],
    wanted: tuple[str, ...],
    separate_images: bool,
) -> tuple[list[OutputLabel], list[Measurement]]:
    """Relabel one lesion label's regions in ``label_map`` (in place); return their labels."""
    found = _regions(label_map == label.value, separate_images)
    sizes = [int(mask.sum()) for _, mask in found]
    pixel_mm2 = volume.spacing_mm[1] * volume.spacing_mm[2]
    sections = [
        float(mask.reshape(len(mask), -1).sum(axis=1).max()) * pixel_mm2 for _, mask in found
    ]
    order = sorted(range(len(found)), key=lambda i: (-sizes[i], i))
    room = min(rules.max_count, _MAX_VALUE + 1 - next_value)
    kept: set[int] = set()
    for i in order:
        if len(kept) >= room or sizes[i] * volume.voxel_volume_mm3 < rules.min_mm3:
            continue
        if sections[i] < rules.min_mm2:
            continue
        if _shape_ok(found[i], volume, rules):
            kept.add(i)
    sites = sorted(v for v, lab in by_value.items() if not lab.instances)
    labels: list[OutputLabel] = []
    measurements: list[Measurement] = []
    for i in order:
        box, mask = found[i]
        site_value = _surrounding(label_map, box, sites, separate_images)
        if i not in kept:
            label_map[box][mask] = site_value  # not reported: part of what surrounds it
            continue
        value = next_value + len(labels)
        label_map[box][mask] = value
        site = by_value.get(site_value)
        labels.append(
            dataclasses.replace(
                label,
                value=value,
                name=f"{label.name} {len(labels) + 1}",
                instances=False,
                finding_site=site.type if site is not None else label.finding_site,
                laterality=site.laterality if site is not None else label.laterality,
            )
        )
        measurements += region_measurements(value, mask, volume.voxels[box], volume, wanted)
    return labels, measurements


def _vote(label_map: npt.NDArray[np.uint8], values: list[int], separate_images: bool) -> None:
    """Give each connected region of the lesion labels ``values`` (taken together) the
    one of them most of its voxels have (in place): the lesion's class."""
    for box, mask in _regions(np.isin(label_map, values), separate_images):
        counts = np.bincount(label_map[box][mask], minlength=_MAX_VALUE + 1)[values]
        label_map[box][mask] = values[int(np.argmax(counts))]


def segmentation_output(
    manifest: ModelManifest, label_map: npt.NDArray[np.uint8], volume: Volume
) -> ModelOutput:
    """The model output of a label map: its labels, lesion labels split, and measurements.

    Parameters
    ----------
    manifest:
        Labels (``instances`` marks lesion labels), ``postprocess.measurements`` and the
        :class:`InstanceRules`.
    label_map:
        (slices, rows, columns) uint8 in the volume's geometry; lesion labels are
        renumbered in place, to values after the manifest's labels. With projection
        geometry (``manifest.projection``) each image's regions are its own.
    volume:
        The input volume (spacing, and the values ``mean_hu`` averages).

    Returns
    -------
    ModelOutput
        The manifest's other labels, then one label per reported region.
    """
    lesions = [label for label in manifest.labels if label.instances]
    labels = [label for label in manifest.labels if not label.instances]
    measurements: list[Measurement] = []
    if len(lesions) > 1 and manifest.postprocess.get("vote_instances", False):
        _vote(label_map, [lesion.value for lesion in lesions], manifest.projection)
    if lesions:
        rules = InstanceRules.from_manifest(manifest)
        default = tuple(manifest.postprocess.get("measurements", []))
        by_value = {label.value: label for label in manifest.labels}
        next_value = max(by_value) + 1
        for lesion in lesions:
            found, measured = _split(
                lesion,
                label_map,
                volume,
                rules,
                next_value,
                by_value,
                lesion.measurements or default,
                manifest.projection,
            )
            labels += found
            measurements += measured
            next_value += len(found)
    # the other labels are measured last: they got the regions that were not reported
    measurements[:0] = label_measurements(manifest, label_map, volume)
    measurements += total_measurements(manifest, label_map, volume)
    measurements += ratio_measurements(manifest, label_map)
    return ModelOutput(labels=tuple(labels), label_map=label_map, measurements=tuple(measurements))
