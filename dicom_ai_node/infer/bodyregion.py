"""Infer: the body-region classifier, run for routing when the headers do not tell.

The router (``route/bodypart.py``) decides a series' region from its headers first:
BodyPartExamined, the Anatomic Region Sequence, then words of the descriptions. When
none names a region, or they contradict each other, it asks this model (the hook
:class:`~dicom_ai_node.route.bodypart.BodyRegionClassifier`), and the routing explanation
says "image classifier" decided, with the confidence.

A models folder may hold one such model (``task = "body-region"``) per modality: the
built-in ones read CT (``models/body_region``), MR (``models/mr_body_region``) and
radiographs (``models/xr_body_region``); :class:`BodyRegionModels` asks the one whose
``input.modalities`` names the series' Modality. Each reads up to three images of a
series, at 25, 50 and 75 % along it (by ImagePositionPatient, PS3.3 C.7.6.2, else
InstanceNumber), each with the Modality LUT applied (PS3.3 C.11.1), MONOCHROME1 inverted
so that dense is bright as in MONOCHROME2 (PS3.3 C.7.6.3.1.2), and area-resized to
64x64; it averages the softmax of its outputs, one per label (a body region, in order).
Modalities no model reads get no answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..domain import BodyPart
from ..errors import ConfigError, InferenceError
from .manifest import ModelManifest
from .runner import Device
from .runners.torchscript import load_torchscript
from .volume import Decode, needs_codec, pixels_of

__all__ = ["BODY_REGION_TASK", "BodyRegionModel", "BodyRegionModels", "pick_slices"]

log = logging.getLogger(__name__)

BODY_REGION_TASK = "body-region"
INPUT_SIZE = 64


def pick_slices(count: int) -> list[int]:
    """Indices of the slices at 25, 50 and 75 % of ``count`` (fewer for short series)."""
    return sorted({min(count - 1, round(f * (count - 1))) for f in (0.25, 0.5, 0.75)})


def _position(ds: Dataset) -> float:
    """Where a slice lies along the series (z of ImagePositionPatient, else its number)."""
    position = ds.get("ImagePositionPatient")
    if position is not None and len(position) == 3:
        return float(position[2])
    return float(ds.get("InstanceNumber") or 0)


class BodyRegionModel:
    """The body-region classifier of a ``task = "body-region"`` manifest.

    Parameters
    ----------
    manifest:
        Its labels name the regions, in output order (``Head`` -> HEAD, ...).
    device:
        Where to run it.

    Raises
    ------
    ConfigError
        When a label does not name a body region.
    """

    def __init__(self, manifest: ModelManifest, device: Device) -> None:
        self.manifest = manifest
        self.device = device
        try:
            self.regions = tuple(BodyPart(label.name.upper()) for label in manifest.labels)
        except ValueError as exc:
            raise ConfigError(
                f"model {manifest.name}: a label is not a body region: {exc}"
            ) from exc
        self._module: torch.jit.ScriptModule | None = None
        self._lock = threading.Lock()

    def accepts(self, modality: str) -> bool:
        """Whether the model reads series of this modality."""
        return modality.upper() in self.manifest.input.modalities

    def classify(self, slices: Sequence[np.ndarray]) -> tuple[BodyPart, float]:
        """The region of these axial slices (HU) and its mean softmax probability."""
        with self._lock:
            if self._module is None:
                self._module = load_torchscript(
                    str(self.manifest.weights_path), self.manifest.name, torch.device("cpu")
                )
            module = self._module
        x = torch.cat(
            [
                F.interpolate(
                    torch.from_numpy(np.asarray(s, dtype=np.float32))[None, None],
                    size=(INPUT_SIZE, INPUT_SIZE),
                    mode="area",
                )
                for s in slices
            ]
        )
        with torch.inference_mode():
            probs = torch.softmax(module(x).float(), dim=1).mean(dim=0)
        index = int(probs.argmax())
        return self.regions[index], float(probs[index])

    def classify_files(
        self, paths: Sequence[Path], decode: Decode | None = None
    ) -> tuple[BodyPart, float] | None:
        """Classify a series from its files; ``None`` when it cannot be read as one.

        Only the headers of every file and the pixels of three are read; compressed
        pixels go through ``decode`` (the isolated decoder) when given.
        """
        try:
            headers = [(_position(dcmread(p, stop_before_pixels=True)), p) for p in paths]
            headers.sort(key=lambda item: item[0])
            chosen = [dcmread(headers[i][1]) for i in pick_slices(len(headers))]
        except (OSError, InvalidDicomError, ValueError, TypeError) as exc:
            log.warning("body region: cannot read the series: %s", type(exc).__name__)
            return None
        if not chosen or not self.accepts(str(chosen[0].get("Modality", ""))):
            return None
        try:
            coded = [ds for ds in chosen if needs_codec(ds)]
            if coded and decode is not None:
                decoded = iter(decode(coded))
                pixels = [next(decoded) if needs_codec(ds) else pixels_of(ds) for ds in chosen]
            else:
                pixels = [pixels_of(ds) for ds in chosen]
            if any(p.ndim != 2 for p in pixels):
                return None  # multi-frame or colour: not what the model reads
            pixels = [
                p.max() + p.min() - p if ds.get("PhotometricInterpretation") == "MONOCHROME1" else p
                for ds, p in zip(chosen, pixels, strict=True)
            ]
            return self.classify(pixels)
        except (
            InferenceError,
            ValueError,
            AttributeError,
            KeyError,
            RuntimeError,
            NotImplementedError,
        ) as exc:
            log.warning("body region: cannot classify the series: %s", exc)
            return None


class BodyRegionModels:
    """The body-region classifiers of a models folder, each for its own modalities.

    Parameters
    ----------
    models:
        At most one per modality.

    Raises
    ------
    ConfigError
        When two models read the same modality.
    """

    def __init__(self, models: Sequence[BodyRegionModel]) -> None:
        self.models = tuple(models)
        self._by_modality: dict[str, BodyRegionModel] = {}
        for model in self.models:
            for modality in model.manifest.input.modalities:
                other = self._by_modality.setdefault(modality.upper(), model)
                if other is not model:
                    raise ConfigError(
                        f"body-region models {other.manifest.name} and {model.manifest.name} "
                        f"both read {modality}"
                    )

    def accepts(self, modality: str) -> bool:
        """Whether a model reads series of this modality."""
        return modality.upper() in self._by_modality

    def for_modality(self, modality: str) -> BodyRegionModel | None:
        """The model that reads this modality, if any."""
        return self._by_modality.get(modality.upper())

    def classify_files(
        self, paths: Sequence[Path], decode: Decode | None = None
    ) -> tuple[BodyPart, float] | None:
        """Classify a series with the model of its Modality (read from its first file)."""
        if not paths:
            return None
        try:
            modality = str(dcmread(paths[0], stop_before_pixels=True).get("Modality", ""))
        except (OSError, InvalidDicomError, ValueError, TypeError) as exc:
            log.warning("body region: cannot read the series: %s", type(exc).__name__)
            return None
        model = self.for_modality(modality)
        return None if model is None else model.classify_files(paths, decode)
