"""Network of the built-in CT chest lung model: a small 2-D UNet on axial slices.

The TorchScript contract the node's generic runner relies on:

* input ``x``: float32 ``(N, 1, 160, 160)`` in Hounsfield units, each axial slice resized
  with ``interpolate(mode="area")``; the module normalises intensities itself;
* output: float32 logits ``(N, 4, 160, 160)``; channel 0 background, 1 right lung (image
  left in the standard LPS display), 2 left lung, 3 nodule.

The kidney model (``models/ct_kidney_tumour``) uses the same network with 3 classes at
128 x 128.

It works with channels_last inputs and under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(the output is cast back to float32).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

__all__ = ["HU_MAX", "HU_MIN", "INPUT_SIZE", "NUM_CLASSES", "LungUNet"]

INPUT_SIZE = 160
NUM_CLASSES = 4
HU_MIN = -1024.0
HU_MAX = 600.0


class _Block(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    """Upsample x2 (bilinear), concatenate the skip connection, then a block."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_skip, 1, bias=False)
        self.block = _Block(2 * c_skip, c_out)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.reduce(x)
        return self.block(torch.cat([x, skip.to(x.dtype)], dim=1))


class LungUNet(nn.Module):
    """2-D UNet: raw HU in, class logits out, at the same size (a multiple of 16)."""

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 48, 64, 96),
        classes: int = NUM_CLASSES,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.channels = list(channels)
        self.hu_min = HU_MIN
        self.hu_max = HU_MAX
        # 1: one slice; 3: a 2.5-D model's slice with its neighbours (preprocess.context_mm)
        downs = [_Block(in_channels, channels[0])]
        downs += [_Block(a, b) for a, b in itertools.pairwise(channels)]
        self.downs = nn.ModuleList(downs)
        ups = [
            _Up(channels[i + 1], channels[i], channels[i])
            for i in reversed(range(len(channels) - 1))
        ]
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(channels[0], classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        # intensities: clip to [-1024, 600] HU, then scale to [-1, 1]
        x = x.float().clamp(self.hu_min, self.hu_max)
        x = (x - (self.hu_max + self.hu_min) / 2) / ((self.hu_max - self.hu_min) / 2)
        skips: list[Tensor] = []
        for i, down in enumerate(self.downs):
            if i > 0:
                x = nn.functional.max_pool2d(x, 2)
            x = down(x)
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x).float()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
