"""Training: the loop that fits a network, and the inputs, targets and batches it is fed.

The inputs and targets are made as the node's runner prepares a series (area resize,
percentile scaling), so that a network learns on what it will be given. The batches are
drawn from a generator seeded with the run's seed, and every draw happens in a fixed
order: a run is reproducible from its ``Config``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dicom_ai_node.infer.tasks.network import bf16_supported
from dicom_ai_node.infer.tasks.segment import volume_percentiles

__all__ = [
    "CLASSIFIER_LINE",
    "LINE",
    "Batch",
    "cosine_lr",
    "descend",
    "fit",
    "fit_classifier",
    "jitter",
    "lr_at",
    "percentile_scaled",
    "resize_input",
    "segmentation_loss",
    "showing",
    "slice_batch",
    "soft_targets",
]

M = TypeVar("M", bound=nn.Module)
#: Draws one batch (inputs, targets) with the loop's generator.
Batch = Callable[[torch.Generator], tuple[Tensor, Tensor]]
#: A progress line, every 100 steps and at the last (``str.format`` fields: step, loss,
#: lr, seconds): the segmenters' and the classifiers'.
LINE = "step {step:5d} loss {loss:.4f} {seconds:7.1f}s"
CLASSIFIER_LINE = "step {step:5d}  loss {loss:.4f}  lr {lr:.5f}"


class Schedule(Protocol):
    """What the loop reads of a run's ``Config``."""

    @property
    def seed(self) -> int: ...

    @property
    def steps(self) -> int: ...

    @property
    def lr(self) -> float: ...


class Settings(Schedule, Protocol):
    """A segmenter's run: the schedule and Adam's weight decay."""

    @property
    def weight_decay(self) -> float: ...


# ---------------------------------------------------------------- inputs and targets
def resize_input(image: np.ndarray | Tensor, size: int) -> Tensor:
    """(Z, Y, X) image -> (Z, 1, size, size) float32, as the node's runner resizes (area)."""
    x = torch.as_tensor(image).to(torch.float32).unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="area")


def soft_targets(labels: np.ndarray, classes: int, size: int) -> Tensor:
    """(Z, Y, X) labels -> (Z, classes, size, size) uint8 class fractions (x255), area resize.

    Soft targets teach partial-volume fractions, and keep volumes right once the runner
    upsamples the logits bilinearly.
    """
    lab = torch.from_numpy(labels.astype(np.int64))
    onehot = F.one_hot(lab, classes).permute(0, 3, 1, 2).to(torch.float32)
    frac = F.interpolate(onehot, size=(size, size), mode="area")
    return (frac * 255).round().to(torch.uint8)


def percentile_scaled(image: np.ndarray, ceiling: float = 1.0) -> np.ndarray:
    """An image scaled as the node scales a series without units (``preprocess.intensity =
    "percentile"``): its 1st..99th percentile to 0..1, clipped at 0 and ``ceiling``."""
    low, high = volume_percentiles(image)
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, ceiling).astype(np.float32)


# ---------------------------------------------------------------- batches
def jitter(generator: torch.Generator, n: int, amount: float) -> Tensor:
    """``amount`` times a uniform draw in [-1, 1), one per example: shape (n, 1, 1, 1)."""
    return amount * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)


def showing(targets: Tensor, first: int) -> Tensor:
    """Indices of the examples whose soft targets show a class from ``first`` on (a rare
    structure), or of all examples when none does (a smoke run may have none)."""
    found = torch.nonzero(targets[:, first:].flatten(1).amax(dim=1) > 0).flatten()
    return found if len(found) else torch.arange(targets.shape[0])


def slice_batch(
    generator: torch.Generator,
    x: Tensor,
    y: Tensor,
    size: int,
    *,
    favoured: Tensor | None = None,
    share: int = 0,
    gain: float = 0.0,
    shift: float = 0.0,
    clamp: bool = False,
    flip: int | None = None,
    swap: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """``size`` examples of images ``x`` and soft targets ``y`` (uint8 x255), augmented.

    The last ``share`` examples come from the indices ``favoured`` (see :func:`showing`),
    the others from all. Intensities are multiplied by 1 +- ``gain``, then shifted by
    +- ``shift`` (each example its own draw), then clipped to 0..1 with ``clamp``. With
    ``flip`` the batch is mirrored along that axis half the time, and ``swap`` then
    reorders the target channels (left and right labels trade places).
    """
    index = torch.randint(0, x.shape[0], (size - share,), generator=generator)
    if favoured is not None and share:
        pick = torch.randint(0, len(favoured), (share,), generator=generator)
        index = torch.cat([index, favoured[pick]])
    xb = x[index]
    if gain:
        xb = xb * (1 + jitter(generator, size, gain))
    if shift:
        xb = xb + jitter(generator, size, shift)
    if clamp:
        xb = xb.clamp(0.0, 1.0)
    yb = y[index].to(torch.float32) / 255
    if flip is not None and torch.rand((), generator=generator) < 0.5:
        xb, yb = torch.flip(xb, dims=(flip,)), torch.flip(yb, dims=(flip,))
        if swap is not None:
            yb = yb[:, list(swap)]
    return xb, yb


# ---------------------------------------------------------------- schedules and loss
def lr_at(step: int, cfg: Schedule) -> float:
    """Linear warm-up for 5% of the steps, then cosine decay to zero."""
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg.steps - warm)))


def cosine_lr(step: int, cfg: Schedule) -> float:
    """Cosine decay from ``cfg.lr`` to zero, no warm-up."""
    return float(cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))


def segmentation_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Soft cross-entropy (classes weighted by ``weight``) plus soft Dice over the labels
    (every class but the background)."""
    logp = F.log_softmax(logits, dim=1)
    w = torch.ones(logits.shape[1]) if weight is None else weight
    ce = -(target * logp * w.view(1, -1, 1, 1)).sum(dim=1).mean()
    p = logp.exp()[:, 1:]
    t = target[:, 1:]
    inter = (p * t).sum(dim=(0, 2, 3))
    dice = (2 * inter + 1.0) / (p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3)) + 1.0)
    return ce + (1 - dice).mean()


# ---------------------------------------------------------------- the loop
def descend(
    model: M,
    optimiser: torch.optim.Optimizer,
    cfg: Schedule,
    batch: Batch,
    loss: Callable[[Tensor, Tensor], Tensor],
    schedule: Callable[[int], float],
    *,
    bf16: bool = False,
    log: bool = True,
    line: str = LINE,
) -> M:
    """``cfg.steps`` steps of ``optimiser`` on ``loss(model(inputs), targets)``.

    Each step draws its batch with a generator seeded with ``cfg.seed`` and sets the
    learning rate to ``schedule(step)``. With ``bf16`` the forward pass runs under bf16
    autocast where the CPU has it natively (2.4x faster steps; 10x slower when emulated),
    as the node runs such models. Returns the model in eval mode.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    started = time.perf_counter()
    for step in range(cfg.steps):
        inputs, targets = batch(generator)
        lr = schedule(step)
        for group in optimiser.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and bf16_supported()):
            logits = model(inputs)
        value = loss(logits.float(), targets)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        if log and (step % 100 == 0 or step == cfg.steps - 1):
            seconds = time.perf_counter() - started
            print(line.format(step=step, loss=value.item(), lr=lr, seconds=seconds), flush=True)
    return model.eval()


def fit(
    make: Callable[[], M],
    cfg: Settings,
    batch: Batch,
    *,
    weight: Tensor | None = None,
    bf16: bool = False,
    log: bool = True,
) -> M:
    """Train a fresh segmentation network as the UNet models are trained.

    ``make()`` builds it after seeding torch with ``cfg.seed``; then channels_last
    batches, Adam (``cfg.lr``, ``cfg.weight_decay``), :func:`lr_at` and
    :func:`segmentation_loss` with the classes weighted by ``weight``.
    """
    torch.manual_seed(cfg.seed)
    model = make().to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def channels_last(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        inputs, targets = batch(generator)
        return inputs.contiguous(memory_format=torch.channels_last), targets

    return descend(
        model,
        optimiser,
        cfg,
        channels_last,
        lambda logits, target: segmentation_loss(logits, target, weight),
        lambda step: lr_at(step, cfg),
        bf16=bf16,
        log=log,
    )


def fit_classifier(
    make: Callable[[], M],
    cfg: Schedule,
    batch: Batch,
    loss: Callable[[Tensor, Tensor], Tensor],
    *,
    log: bool = True,
) -> M:
    """Train a fresh image classifier as the body-region and radiograph models are trained:
    ``make()`` after seeding torch with ``cfg.seed``, AdamW (weight decay 1e-4) and
    :func:`cosine_lr`."""
    torch.manual_seed(cfg.seed)
    model = make()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    return descend(
        model,
        optimiser,
        cfg,
        batch,
        loss,
        lambda step: cosine_lr(step, cfg),
        log=log,
        line=CLASSIFIER_LINE,
    )
