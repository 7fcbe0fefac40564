"""The body-region classifier: a small CNN over one image (an axial slice, a radiograph).

Contract (the node's ``infer/bodyregion.py``): ``forward`` takes float32 (N, 1, 64, 64),
the rescaled pixel values of each image area-resized to 64x64, and returns one logit per
region of the manifest. The normalisation is inside, so the weights carry their own
preprocessing: for CT the window -1000..1500 HU (scaled to about -1..1.5); for MR and
radiographs, whose pixel values have no fixed scale, each image's 1st and 99th percentile
are mapped to 0 and 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

INPUT_SIZE = 64
CLASSES = ("HEAD", "NECK", "CHEST", "ABDOMEN", "PELVIS")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class RegionNet(nn.Module):
    """Four conv blocks (16-32-64-64 channels, three 2x2 poolings), global average
    pooling and a linear layer: about 70 k parameters."""

    def __init__(self, classes: int = len(CLASSES), percentile: bool = False) -> None:
        super().__init__()
        self.percentile = percentile
        self.features = nn.Sequential(
            _block(1, 16),
            nn.MaxPool2d(2),
            _block(16, 32),
            nn.MaxPool2d(2),
            _block(32, 64),
            nn.MaxPool2d(2),
            _block(64, 64),
        )
        self.head = nn.Linear(64, classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.percentile:
            flat = x.flatten(1)
            low = torch.quantile(flat, 0.01, dim=1).view(-1, 1, 1, 1)
            high = torch.quantile(flat, 0.99, dim=1).view(-1, 1, 1, 1)
            x = torch.clamp((x - low) / torch.clamp(high - low, min=1e-6), -0.5, 1.5)
        else:
            x = torch.clamp(x, -1000.0, 1500.0) / 1000.0
        x = self.features(x)
        return self.head(x.mean(dim=(2, 3)))
