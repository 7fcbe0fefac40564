"""Training: the network building blocks several built-in models share.

:class:`UNet` is the 2-D UNet first made for the CT chest lung model; the kidney, CTA,
mammography, brain, ultrasound and MR kidney models train it as it is (their own classes,
input window and input channels), the liver model (``models/mr_liver_lesion/resunet.py``)
and the cine model (``models/mr_cine_lv/cine_net.py``) build on it.

The TorchScript contract the node's generic runner relies on: input float32
``(N, in_channels, H, W)`` in the model's own unit (HU for CT, 0..1 for scaled images),
``H`` and ``W`` a multiple of 16; output float32 logits ``(N, classes, H, W)``. The module
clips and scales its input itself (``window``), so the weights carry their preprocessing.
It works with channels_last inputs and under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(the output is cast back to float32).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

__all__ = ["ConvBlock", "UNet", "UpBlock", "count_parameters"]


class ConvBlock(nn.Sequential):
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


class UpBlock(nn.Module):
    """Upsample x2 (bilinear), concatenate the skip connection, then a block."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_skip, 1, bias=False)
        self.block = ConvBlock(2 * c_skip, c_out)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.reduce(x)
        return self.block(torch.cat([x, skip.to(x.dtype)], dim=1))


class UNet(nn.Module):
    """2-D UNet: input in the model's unit, class logits out, at the same size.

    ``window`` (low, high) is clipped to and scaled to [-1, 1] inside the network;
    ``in_channels`` is 1 for one slice, 3 for a 2.5-D model's slice with its neighbours
    (``preprocess.context_mm``).
    """

    def __init__(
        self,
        classes: int,
        channels: tuple[int, ...] = (16, 32, 48, 64, 96),
        in_channels: int = 1,
        *,
        window: tuple[float, float],
    ) -> None:
        super().__init__()
        self.channels = list(channels)
        self.hu_min, self.hu_max = float(window[0]), float(window[1])
        downs = [ConvBlock(in_channels, channels[0])]
        downs += [ConvBlock(a, b) for a, b in itertools.pairwise(channels)]
        self.downs = nn.ModuleList(downs)
        ups = [
            UpBlock(channels[i + 1], channels[i], channels[i])
            for i in reversed(range(len(channels) - 1))
        ]
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(channels[0], classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        # intensities: clip to the window, then scale to [-1, 1]
        x = x.float().clamp(self.hu_min, self.hu_max)
        x = (x - (self.hu_max + self.hu_min) / 2) / ((self.hu_max - self.hu_min) / 2)
        skips: list[Tensor] = []
        for i, down in enumerate(self.downs):
            if i > 0:
                x = nn.functional.max_pool2d(x, 2)
            x = down(x)
            skips.append(x)
        skips.pop()
        x = self.bottleneck(x)
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x).float()

    def bottleneck(self, x: Tensor) -> Tensor:
        """The deepest features on their way to the decoder: as they are here; a network
        built on this one may add to them (the cine model's GRU over time)."""
        return x


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
