"""Network of the built-in cine model: a 2-D UNet per frame with a bidirectional
convolutional GRU across the frames at its bottleneck (a CNN+RNN).

The TorchScript contract, the node's 2-D segmentation contract with one addition:

* input ``x``: float32 ``(T, 1, 128, 128)``, the ``T`` frames of one short-axis level
  in time order (one cardiac cycle), each scaled to 0..1 and resized with
  ``interpolate(mode="area")``; the node passes a level's frames as one batch
  (``preprocess.geometry = "cine"``), so the batch axis is time;
* output: float32 logits ``(T, 3, 128, 128)``: background, left-ventricular cavity,
  left-ventricular myocardium.

The encoder sees each frame on its own; the GRU carries what it found along the cycle,
forwards and backwards, so that each frame's segmentation draws on its neighbours (the
moving wall, a blurred frame); the decoder turns that back into per-frame maps through
the encoder's skip connections.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ct_chest_lungs"))

from net import LungUNet, count_parameters  # the lung model's UNet

__all__ = ["CineUNet", "ConvGRUCell", "count_parameters"]


class ConvGRUCell(nn.Module):
    """A convolutional GRU cell (Ballas et al. 2016): gates from 3x3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gates = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.candidate = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        fresh = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * fresh


class CineUNet(LungUNet):
    """The lung model's UNet with a bidirectional ConvGRU over time at the bottleneck."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 48, 64, 96), classes: int = 3) -> None:
        super().__init__(channels, classes)
        self.hu_min, self.hu_max = 0.0, 1.0
        width = channels[-1]
        memory = width // 2  # the GRUs' state: half the bottleneck's channels
        self.squeeze = nn.Conv2d(width, memory, 1)
        self.forwards = ConvGRUCell(memory)
        self.backwards = ConvGRUCell(memory)
        self.merge = nn.Conv2d(width + 2 * memory, width, 1)

    def _across_time(self, x: Tensor) -> Tensor:
        """x: (T, C, h, w) bottleneck features in time order -> the same, with context."""
        steps = x.shape[0]
        small = self.squeeze(x)
        h = torch.zeros_like(small[:1])
        ahead: list[Tensor] = []
        for t in range(steps):
            h = self.forwards(small[t : t + 1], h)
            ahead.append(h)
        h = torch.zeros_like(small[:1])
        behind: list[Tensor] = []
        for t in range(steps - 1, -1, -1):
            h = self.backwards(small[t : t + 1], h)
            behind.append(h)
        behind.reverse()
        both = torch.cat([x, torch.cat(ahead, dim=0), torch.cat(behind, dim=0)], dim=1)
        return x + self.merge(both)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().clamp(self.hu_min, self.hu_max)
        x = (x - (self.hu_max + self.hu_min) / 2) / ((self.hu_max - self.hu_min) / 2)
        skips: list[Tensor] = []
        for i, down in enumerate(self.downs):
            if i > 0:
                x = nn.functional.max_pool2d(x, 2)
            x = down(x)
            skips.append(x)
        skips.pop()
        x = self._across_time(x)
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x).float()
