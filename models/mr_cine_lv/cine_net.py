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

import torch
from torch import Tensor, nn

from models._training.blocks import UNet

__all__ = ["CineUNet", "ConvGRUCell"]


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


class CineUNet(UNet):
    """The shared UNet with a bidirectional ConvGRU over time at the bottleneck."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 48, 64, 96), classes: int = 3) -> None:
        super().__init__(classes, channels, window=(0.0, 1.0))
        width = channels[-1]
        memory = width // 2  # the GRUs' state: half the bottleneck's channels
        self.squeeze = nn.Conv2d(width, memory, 1)
        self.forwards = ConvGRUCell(memory)
        self.backwards = ConvGRUCell(memory)
        self.merge = nn.Conv2d(width + 2 * memory, width, 1)

    def bottleneck(self, x: Tensor) -> Tensor:
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
