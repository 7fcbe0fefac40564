"""Infer: brain extraction on T1-weighted MR with two 3-D networks (``task = "brain-extraction"``).

The networks are deepbet's (Fisch et al., Computers in Biology and Medicine 179, 2024,
108845; the ``deepbet`` package, MIT): a bounding-box network at 128^3 and a brain
network at 256^3, both taking (1, 1, D, H, W) and returning (1, 2, D, H, W)
probabilities (background, brain). The node runs them itself, step for step as
deepbet 1.0.2's ``BrainExtraction.run_model`` and ``postprocess`` do (its ``bet.py``):

1. the volume turned to the closest canonical RAS orientation (:mod:`.orient`), as
   deepbet reads a NIfTI image through ``nibabel.as_closest_canonical``;
2. the whole volume resized to 128^3 (nearest-exact), its 0.5 and 99.5 percentiles
   taken as the intensity window, scaled (:func:`normalize`) and passed through the
   bounding-box network; the largest connected part of its mask (probability > 0.5)
   gives a box, widened by 10 % on each side;
3. the box resized to 256^3, scaled with the same window, passed through the brain
   network, its probabilities resized back to the box and thresholded at 0.5;
4. in the box, the largest connected part kept and its enclosed voids filled;
5. the mask turned back to the series' own voxel order (exact: axes only permuted and
   flipped) and split by intensity into brain parenchyma and intracranial CSF
   (:mod:`..findings.tissue`, a fixed rule, not learnt).

Subclasses say how to load and call a network (:meth:`BrainExtractor._load`,
:meth:`BrainExtractor._forward`); :mod:`..runners.torchscript` runs TorchScript files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from ...domain import ModelOutput, Volume
from ...errors import InferenceError
from ..findings.tissue import brain_output
from .network import WarmTorch
from .orient import Canonical, closest_canonical

__all__ = [
    "LARGE",
    "SMALL",
    "BrainExtractor",
    "BrainInput",
    "BrainMask",
    "bounding_box",
    "keep_largest_filled",
    "normalize",
]

#: The bounding-box network's input size (deepbet 1.0.2 ``run_model``: ``small_shape``).
SMALL = (128, 128, 128)
#: The brain network's input size (``shape``).
LARGE = (256, 256, 256)
#: How much the box grows on each side, as a fraction of its size (``bbox_margin``).
MARGIN = 0.1
#: Probability above which a voxel is brain (``threshold``).
THRESHOLD = 0.5
#: A box slice must be brain over more than this fraction of its area (``get_bbox``).
BOX_FRACTION = 0.02

Box = tuple[slice, slice, slice]


def normalize(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """deepbet's input scaling: clip to [low, high] as 0..1, standardise, then to the
    mean 0.449 and standard deviation 0.226 its networks were trained with."""
    x = ((x - low) / (high - low)).clamp(min=0, max=1)
    x = (x - x.mean()) / x.std()
    return 0.226 * x + 0.449


def keep_largest_filled(mask: npt.NDArray[np.bool_], fill: bool) -> npt.NDArray[np.bool_]:
    """The largest 26-connected part of ``mask`` (connected-components-3d, as deepbet),
    its enclosed voids filled (fill_voids) when ``fill``; empty stays empty."""
    import cc3d
    import fill_voids

    labels = cc3d.connected_components(mask)
    counts = np.bincount(labels[labels != 0])
    if counts.size == 0:
        return np.zeros_like(mask, dtype=bool)
    largest: npt.NDArray[np.bool_] = labels == int(counts.argmax())
    if fill:
        largest = np.asarray(fill_voids.fill(largest), dtype=bool)
    return largest


def bounding_box(mask_small: torch.Tensor, shape: tuple[int, ...], margin: float = MARGIN) -> Box:
    """The box around the small mask's brain, scaled to ``shape`` and widened by ``margin``.

    As deepbet's ``get_bbox_with_margin``: along each axis, the slices whose mean is above
    :data:`BOX_FRACTION`; centre and size scaled (float32) and rounded half to even.

    Raises
    ------
    InferenceError
        When the bounding-box network found no brain along some axis.
    """
    spans = [
        torch.where(mask_small.mean(dims) > BOX_FRACTION)[0] for dims in ((1, 2), (0, 2), (0, 1))
    ]
    if any(span.numel() == 0 for span in spans):
        raise InferenceError("brain extraction: the bounding-box network found no brain")
    center = torch.tensor([(s.max() + 1 + s.min()) / 2 for s in spans])
    size = torch.tensor([(s.max() + 1) - s.min() for s in spans])
    scale = torch.tensor(shape) / torch.tensor(mask_small.shape)
    center, size = scale * center, (1 + 2 * margin * torch.ones(3)) * (scale * size)
    center, size = center.round(), size.round()
    box = [(int(c - s / 2), int(c + s / 2)) for c, s in zip(center, size, strict=True)]
    return (
        slice(max(0, box[0][0]), min(shape[0], box[0][1])),
        slice(max(0, box[1][0]), min(shape[1], box[1][1])),
        slice(max(0, box[2][0]), min(shape[2], box[2][1])),
    )


@dataclass(frozen=True)
class BrainInput:
    """The volume in canonical RAS order (float32) and how it was turned."""

    voxels: torch.Tensor
    canonical: Canonical


@dataclass(frozen=True)
class BrainMask:
    """The brain mask in canonical RAS order, and how to turn it back."""

    mask: npt.NDArray[np.bool_]
    canonical: Canonical


class BrainExtractor(WarmTorch):
    """Runs the bounding-box and the brain network of a ``brain-extraction`` model.

    Parameters
    ----------
    manifest:
        The model; ``preprocess.bf16 = false`` keeps the networks in float32 even where
        the CPU has native bfloat16.
    device:
        Where to run.
    """

    @property
    def use_bf16(self) -> bool:
        """bf16 autocast: on CPUs with native support, unless the manifest says no."""
        return bool(self.manifest.preprocess.get("bf16", True)) and super().use_bf16

    def _forward(self, network: str, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (1, 2, D, H, W) of ``network`` ("bbox" or "brain") for (1, 1, D, H, W)."""
        raise NotImplementedError

    def _brain_probability(self, network: str, x: torch.Tensor) -> torch.Tensor:
        """The brain channel (D, H, W), float32, of one pass on a (D, H, W) input."""
        with torch.inference_mode():
            out = self._forward(network, x[None, None].to(self.torch_device))
        if out.ndim != 5 or out.shape[:2] != (1, 2) or tuple(out.shape[2:]) != tuple(x.shape):
            raise InferenceError(
                f"model {self.manifest.name}: the {network} network returned "
                f"{tuple(out.shape)}, not (1, 2, {', '.join(map(str, x.shape))})"
            )
        return out[0, 1].float().cpu()

    def preprocess(self, volume: Volume) -> BrainInput:
        """The volume in the closest canonical RAS orientation (float32, NaN as 0)."""
        if volume.voxels.ndim != 3 or min(volume.voxels.shape) < 2:
            raise InferenceError(f"model {self.manifest.name}: needs a 3-D volume")
        canonical = closest_canonical(volume.image_orientation_patient)
        voxels = np.ascontiguousarray(canonical.to_canonical(volume.voxels), dtype=np.float32)
        return BrainInput(torch.nan_to_num(torch.from_numpy(voxels)), canonical)

    def predict(self, inputs: BrainInput) -> BrainMask:
        """deepbet's two passes and post-processing (module docstring, steps 2 to 4)."""
        self.load()
        x = inputs.voxels
        small = F.interpolate(x[None, None], SMALL, mode="nearest-exact")[0, 0]
        low, high = small.quantile(0.005), small.quantile(0.995)
        if not float(high) > float(low):
            raise InferenceError(f"model {self.manifest.name}: the volume has no contrast")
        box_probability = self._brain_probability("bbox", normalize(small, low, high))
        box_mask = keep_largest_filled((box_probability > THRESHOLD).numpy(), fill=False)
        box = bounding_box(torch.from_numpy(box_mask.astype(np.float32)), tuple(x.shape))
        crop = x[box]
        large = F.interpolate(crop[None, None], LARGE, mode="nearest-exact")[0, 0]
        probability = self._brain_probability("brain", normalize(large, low, high))
        back = F.interpolate(probability[None, None], tuple(crop.shape), mode="nearest-exact")
        mask = np.zeros(tuple(x.shape), dtype=bool)
        mask[box] = keep_largest_filled(back[0, 0].numpy() > THRESHOLD, fill=True)
        return BrainMask(mask, inputs.canonical)

    def postprocess(self, prediction: BrainMask, volume: Volume) -> ModelOutput:
        """The mask in the series' voxel order, split into parenchyma and CSF, measured."""
        mask = np.ascontiguousarray(prediction.canonical.from_canonical(prediction.mask))
        if mask.shape != volume.voxels.shape:
            raise InferenceError(
                f"model {self.manifest.name}: mask {mask.shape} does not match the volume "
                f"{volume.voxels.shape}"
            )
        return brain_output(self.manifest, mask, volume)
