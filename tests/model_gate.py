"""What the quality gates of the built-in 2-D segmentation models share: loading their
TorchScript weights and segmenting a volume exactly as the node's runner does."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_weights", "segment_like_the_runner"]


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
