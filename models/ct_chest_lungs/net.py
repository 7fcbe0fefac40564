"""Network of the built-in CT chest lung model: the shared 2-D UNet on axial slices.

The network is :class:`models._training.blocks.UNet` (channels 16-32-48-64-96) with four
classes and the window -1024..600 HU. The TorchScript contract the node's generic runner
relies on:

* input ``x``: float32 ``(N, 1, 160, 160)`` in Hounsfield units, each axial slice resized
  with ``interpolate(mode="area")``; the module normalises intensities itself;
* output: float32 logits ``(N, 4, 160, 160)``; channel 0 background, 1 right lung (image
  left in the standard LPS display), 2 left lung, 3 nodule.

It works with channels_last inputs and under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(the output is cast back to float32).
"""

from __future__ import annotations

from models._training.blocks import UNet

__all__ = ["HU_MAX", "HU_MIN", "INPUT_SIZE", "NUM_CLASSES", "lung_unet"]

INPUT_SIZE = 160
NUM_CLASSES = 4
HU_MIN = -1024.0
HU_MAX = 600.0


def lung_unet() -> UNet:
    """A fresh network of this model: the UNet, 4 classes, input window -1024..600 HU."""
    return UNet(NUM_CLASSES, window=(HU_MIN, HU_MAX))
