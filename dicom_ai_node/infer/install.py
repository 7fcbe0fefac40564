"""Infer: adding a model -- validate its manifest, load it, try it once, install it.

``dicom-ai-node models add PATH`` calls :func:`try_model` on the folder, then
:func:`install_model` copies it into the models folder. The trial input is generated
from the model's declared input (:class:`~dicom_ai_node.domain.InputSpec`): a volume
of the smallest slice count it accepts (at least 16), 128x128 pixels, a slice spacing
inside its slice-thickness range, with a body-like ellipse of soft tissue (40) in air
(-1000) holding two darker ellipses (-800), in the modality's rescaled units. The
output is checked against the runner protocol: a label map of the volume's shape and
only the labels the manifest declares, measurements of declared labels with finite
values.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..domain import InputSpec, ModelOutput, Volume
from ..errors import ConfigError, InferenceError
from .findings.measure import format_measurement
from .manifest import ModelManifest, load_manifest
from .runner import Device, make_runner

__all__ = ["Trial", "install_model", "trial_volume", "try_model"]

TRIAL_SIZE = 128


@dataclass(frozen=True)
class Trial:
    """What one run on generated input showed."""

    manifest: ModelManifest
    load_s: float
    run_s: float
    shape: tuple[int, int, int]
    #: Voxels given each declared label (0 for labels not found).
    voxels_per_label: dict[str, int]
    output: ModelOutput

    def lines(self) -> list[str]:
        """A human summary, one fact a line; measured values rounded as a reader reads
        them (:func:`.findings.measure.format_value`: the SR keeps them exact)."""
        m = self.manifest
        found = ", ".join(f"{k} {v}" for k, v in self.voxels_per_label.items()) or "none"
        lines = [
            f"model {m.name} {m.version} ({m.runner}, {m.task}): manifest valid",
            f"loaded in {self.load_s:.2f} s",
            f"ran on a generated {self.shape[0]}x{self.shape[1]}x{self.shape[2]} volume "
            f"in {self.run_s:.2f} s",
            f"label voxels: {found}",
        ]
        lines += [
            f"measurement: label {x.label_value} {format_measurement(x)}"
            for x in self.output.measurements
        ]
        return lines


def trial_volume(spec: InputSpec, *, images: int | None = None) -> Volume:
    """A small volume the model's declared input accepts (see the module's description);
    ``images`` sets the number of slices (one for a classifier of single images)."""
    slices = images or max(spec.min_slices or 16, 16)
    if spec.max_slices is not None:
        slices = min(slices, spec.max_slices)
    spacing = sum(spec.slice_thickness_mm) / 2 if spec.slice_thickness_mm else 2.0
    n = TRIAL_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1) * 2 - 1
    image = np.full((n, n), -1000.0, np.float32)
    image[(xx / 0.85) ** 2 + (yy / 0.6) ** 2 < 1] = 40.0
    for cx in (-0.4, 0.4):
        image[((xx - cx) / 0.3) ** 2 + (yy / 0.4) ** 2 < 1] = -800.0
    voxels = np.repeat(image[None], slices, axis=0)
    return Volume(
        voxels=voxels,
        spacing_mm=(spacing, 300.0 / n, 300.0 / n),
        sop_instance_uids=tuple(f"2.25.{i + 1}" for i in range(slices)),
        frame_of_reference_uid="2.25.100",
        series_instance_uid="2.25.101",
        study_instance_uid="2.25.102",
    )


def _check_output(manifest: ModelManifest, output: ModelOutput, volume: Volume) -> None:
    name = manifest.name
    declared = {label.value for label in manifest.labels}
    if output.label_map is not None:
        label_map = np.asarray(output.label_map)
        if label_map.shape != volume.voxels.shape:
            raise InferenceError(
                f"model {name}: label map of shape {label_map.shape}, "
                f"not the volume's {volume.voxels.shape}"
            )
        if label_map.dtype != np.uint8:
            raise InferenceError(f"model {name}: label map of {label_map.dtype}, not uint8")
        extra = set(np.unique(label_map).tolist()) - declared - {0}
        if extra:
            raise InferenceError(f"model {name}: label map holds undeclared labels {extra}")
    for x in output.measurements:
        if x.label_value not in declared or not math.isfinite(x.value):
            raise InferenceError(f"model {name}: measurement {x} of an undeclared label or NaN")


def try_model(folder: Path, device: Device) -> Trial:
    """Validate a model folder's manifest, load the model and run it once.

    Parameters
    ----------
    folder:
        The model's folder, holding ``model.toml``.
    device:
        Where to run it.

    Raises
    ------
    ConfigError
        For an invalid manifest or a runner that cannot be built.
    InferenceError
        When the model cannot load, fails on the trial input, or returns output that
        breaks the runner protocol.
    """
    manifest = load_manifest(folder / "model.toml")
    runner = make_runner(manifest, device)
    started = time.perf_counter()
    runner.load()
    loaded = time.perf_counter()
    volume = trial_volume(manifest.input, images=1 if manifest.task == "classification" else None)
    try:
        output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
    except (ConfigError, InferenceError):
        raise
    except Exception as exc:  # the model's own code: say what broke, not a traceback
        raise InferenceError(
            f"model {manifest.name}: failed on generated input: {type(exc).__name__}: {exc}"
        ) from exc
    ran = time.perf_counter()
    _check_output(manifest, output, volume)
    counts: dict[str, int] = {}
    if output.label_map is not None:
        bins = np.bincount(np.asarray(output.label_map).ravel(), minlength=len(manifest.labels) + 1)
        counts = {label.name: int(bins[label.value]) for label in manifest.labels}
    shape = volume.voxels.shape
    return Trial(
        manifest, loaded - started, ran - loaded, (shape[0], shape[1], shape[2]), counts, output
    )


def install_model(folder: Path, models_dir: Path, *, replace: bool = False) -> Path:
    """Copy a model folder to ``<models_dir>/<name>`` (name from its manifest).

    The copy is made beside the target and renamed into place, so the node never sees
    half a model; an existing model of that name is kept unless ``replace``.

    Raises
    ------
    ConfigError
        When a model of that name exists (and not ``replace``), or the copy fails.
    """
    manifest = load_manifest(folder / "model.toml")
    target = models_dir / manifest.name
    if target.resolve() == folder.resolve():
        return target
    if target.exists() and not replace:
        raise ConfigError(f"a model named {manifest.name} exists in {models_dir}; use --replace")
    temp = models_dir / f".{manifest.name}.adding"
    old = models_dir / f".{manifest.name}.replaced"
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.copytree(folder, temp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        temp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise ConfigError(f"cannot copy {folder} to {target}: {exc}") from exc
    return target
