"""The chest radiograph classifier: a small residual CNN over one PA image.

Contract (the node's ``infer/tasks/classify.py``): ``forward`` takes float32 (N, 1, 192, 192),
each image scaled to 0..1 between its 1st and 99th percentile with MONOCHROME1 inverted
(dense = bright), and returns logits (N, 1): abnormal versus normal.
"""

from __future__ import annotations

from torch import Tensor, nn

INPUT_SIZE = 192


class _Residual(nn.Module):
    """Two 3x3 convolutions with a shortcut; the first one strided by 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class AbnormalNet(nn.Module):
    """A ResNet-style stem and five residual stages (16-24-32-48-64-96 channels, 192 -> 3
    pixels), global average pooling and a linear layer: about 0.3 M parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            _Residual(16, 24),
            _Residual(24, 32),
            _Residual(32, 48),
            _Residual(48, 64),
            _Residual(64, 96),
        )
        self.head = nn.Linear(96, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.head(x.mean(dim=(2, 3)))
