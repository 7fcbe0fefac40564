"""What the quality gates of the built-in models share: loading their TorchScript weights,
segmenting a volume exactly as the node's runner does, and scoring an image classifier
through the node's own runner (its scaling, threshold and saliency)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydicom.dataset import Dataset

from dicom_ai_node.domain import SeriesInfo, Volume
from dicom_ai_node.infer.tasks.classify import ImageClassifier
from dicom_ai_node.route import header_of, series_info

__all__ = [
    "ClassifierGate",
    "built_in_models",
    "classifier_gate",
    "load_weights",
    "segment_like_the_runner",
    "series_of",
]


def series_of(datasets: list[Dataset]) -> SeriesInfo:
    """The router's summary of one generated series, as the node makes it on receipt."""
    return series_info(
        header_of(datasets[0]),
        number_of_instances=len(datasets),
        sop_class_uids={ds.SOPClassUID for ds in datasets},
    )


def load_weights(path: Path) -> torch.jit.ScriptModule:
    """A model's TorchScript weights, on the CPU (torch 2.13 deprecates the loader)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def segment_like_the_runner(
    module: torch.jit.ScriptModule, hu: np.ndarray, size: int = 128
) -> np.ndarray:
    """Area resize to ``size``, batches of 16, bilinear upsampling of the logits, argmax."""
    rows, cols = hu.shape[1:]
    out = np.empty(hu.shape, np.uint8)
    with torch.inference_mode():
        for k in range(0, hu.shape[0], 16):
            x = torch.from_numpy(hu[k : k + 16].astype(np.float32)).unsqueeze(1)
            logits = module(F.interpolate(x, size=(size, size), mode="area"))
            up = F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=False)
            out[k : k + 16] = up.argmax(dim=1).numpy()
    return out


#: Example ``k`` from a generator: (display-density image, abnormal, finding mask).
Example = Callable[[int, np.random.Generator], tuple[np.ndarray, bool, np.ndarray]]


@dataclass(frozen=True)
class ClassifierGate:
    """What :func:`classifier_gate` measured."""

    auc: float
    pointed: int
    tried: int


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def classifier_gate(
    runner: ImageClassifier, example: Example, images: int, seed: int, saliency_images: int = 12
) -> ClassifierGate:
    """Score a classifier through the node's runner on freshly generated images.

    Images go in as stored values (display density x 4000 + 100, not 0..1), so the
    runner's own percentile scaling is part of what is scored. For up to
    ``saliency_images`` abnormal calls the saliency map is made as the node makes it, and
    counts as pointing when its maximum lies within 1/24 of the image of the finding.
    """
    rng = np.random.default_rng(seed)
    scores, labels, pointed, tried = [], [], 0, 0
    for k in range(images):
        image, abnormal, mask = example(k, rng)
        volume = Volume(
            voxels=(image * 4000.0 + 100.0)[None].astype(np.float32),
            spacing_mm=(1.0, 0.35, 0.35),
            sop_instance_uids=("2.25.1",),
            frame_of_reference_uid="",
            series_instance_uid="2.25.2",
            study_instance_uid="2.25.3",
        )
        prediction = runner.predict(runner.preprocess(volume))
        p = float(prediction.probabilities[0, 0])
        scores.append(p)
        labels.append(abnormal)
        if abnormal and p >= runner.threshold and tried < saliency_images:
            heat = runner.postprocess(prediction, volume).saliency[1][0]
            r, c = np.unravel_index(int(heat.argmax()), heat.shape)
            reach = max(1, heat.shape[0] // 24)
            window = mask[max(0, r - reach) : r + reach + 1, max(0, c - reach) : c + reach + 1]
            tried += 1
            pointed += bool(window.any())
    return ClassifierGate(_auc(np.array(scores), np.array(labels)), pointed, tried)


def built_in_models() -> set[str]:
    """Names of the routed built-in models: every ``models/*/model.toml`` but the
    body-region classifiers, whose answers routing gets and no rule names."""
    names = set()
    for path in sorted((Path(__file__).resolve().parents[1] / "models").glob("*/model.toml")):
        manifest = tomllib.loads(path.read_text("utf-8"))
        if manifest["task"] != "body-region":
            names.add(str(manifest["name"]))
    return names


def train_smoke(model_dir: Path, out: Path, timeout_s: float = 120) -> None:
    """Run a model's training script as its card says (``python -m models.<dir>.train``,
    from the repository), in its quick ``--smoke`` mode, writing into ``out``."""
    subprocess.run(
        [sys.executable, "-m", f"models.{model_dir.name}.train", "--smoke", "--out", str(out)],
        cwd=model_dir.parents[1],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )
