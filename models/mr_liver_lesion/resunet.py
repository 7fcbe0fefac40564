"""Network of the built-in liver lesion model: a residual UNet (the ResNet family).

The shared 2-D UNet (``models/_training/blocks.py``) with each convolution block made
a residual block (He et al. 2016: two 3x3 convolutions with batch norm, added to a 1x1
projection of the block's input), so that the encoder is a small ResNet. Its input window
is 0..1 (MR is scaled by the node from the series' percentiles).

The TorchScript contract, the node's 2-D segmentation contract:

* input ``x``: float32 ``(N, 1, 160, 160)``, each axial slice resized with
  ``interpolate(mode="area")``;
* output: float32 logits ``(N, 5, 160, 160)``: background, liver, cyst, haemangioma,
  metastasis. Each lesion is one class: segmenting it is detecting and classifying it;
  the node gives each connected lesion the class most of its voxels have.
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from models._training.blocks import UNet

__all__ = ["ResUNet", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a 1x1 projection of the input, then ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.skip(x))


class ResUNet(UNet):
    """The shared UNet with residual blocks in the encoder and the decoder."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 48, 64, 96), classes: int = 5) -> None:
        super().__init__(classes, channels, window=(0.0, 1.0))
        self.downs = nn.ModuleList(
            [ResidualBlock(1, channels[0])]
            + [ResidualBlock(a, b) for a, b in itertools.pairwise(channels)]
        )
        for up, c in zip(self.ups, reversed(channels[:-1]), strict=True):
            up.block = ResidualBlock(2 * c, c)  # type: ignore[assignment]
