"""The slice segmenter's pieces: the argmax over classes and the per-label volumes."""

from __future__ import annotations

import numpy as np
import torch

from dicom_ai_node.infer.slices import label_argmax


def test_label_argmax_is_torch_argmax_with_the_first_maximum_winning_ties() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randint(-3, 4, (4, 5, 33, 17), generator=generator).float()  # many ties
    expected = logits.argmax(dim=1).to(torch.uint8)
    assert torch.equal(label_argmax(logits), expected)
    assert label_argmax(logits).dtype == torch.uint8


def test_label_argmax_of_one_class_is_background() -> None:
    assert not label_argmax(torch.randn(2, 1, 4, 4)).any()


def test_label_argmax_on_channels_last_logits() -> None:
    logits = torch.randn(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert np.array_equal(label_argmax(logits).numpy(), logits.argmax(dim=1).numpy())
