"""Train the built-in chest radiograph classifier (normal / abnormal); write TorchScript.

Training data: PA chest radiographs from ``dicom_ai_node.radiograph_phantoms``, half
normal, half with one finding (nodule, consolidation, pleural effusion or cardiomegaly),
drawn at 192 to 320 pixels and scaled as the node scales them
(``dicom_ai_node.infer.radiograph.scale_radiographs``): no download, reproducible.

Scoring (held-out seeds from 10 000 on, never trained on): AUC, sensitivity and
specificity at the shipped threshold, sensitivity per finding, and the "pointing game"
of the node's saliency map (occlusion sensitivity, ``dicom_ai_node.infer.saliency``):
how often its maximum lies on the finding.

Usage::

    python models/cxr_abnormal/train.py --out models/cxr_abnormal           # full run
    python models/cxr_abnormal/train.py --smoke --out /tmp/cxr-abnormal     # < 60 s check
    python models/cxr_abnormal/train.py --evaluate-only --out models/cxr_abnormal  # re-score
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from net import INPUT_SIZE, AbnormalNet, count_parameters  # noqa: E402

from dicom_ai_node.infer.tasks.radiograph import scale_radiographs  # noqa: E402
from dicom_ai_node.infer.tasks.saliency import occlusion_saliency  # noqa: E402
from dicom_ai_node.provenance import run_record  # noqa: E402
from dicom_ai_node.testing.phantoms.chest_xr import FINDINGS, chest_radiograph  # noqa: E402

TEST_SEED_BASE = 10_000
THRESHOLD = 0.5
# acceptance thresholds stated in MODEL_CARD.md and checked by the unit test
AUC_MIN = 0.90
POINTING_GAME_MIN = 0.5
ACCEPTANCE = {"auc_min": AUC_MIN, "pointing_game_min": POINTING_GAME_MIN}
SIZE = (INPUT_SIZE, INPUT_SIZE)


@dataclass(frozen=True)
class Config:
    """Settings of one training run (all recorded in metrics.json)."""

    seed: int = 0
    train_images: int = 8000
    steps: int = 1800
    batch_size: int = 32
    lr: float = 2e-3
    eval_images: int = 400
    saliency_images: int = 80

    @staticmethod
    def smoke(seed: int) -> Config:
        return Config(seed=seed, train_images=160, steps=25, eval_images=40, saliency_images=4)


#: One training or test example: image (display density), abnormal, finding name, mask.
Example = tuple[np.ndarray, bool, str, np.ndarray]
#: Draws example ``k`` of a set (the finding may depend on k) from the set's generator.
Sampler = Callable[[int, np.random.Generator], Example]


def sample_chest(k: int, rng: np.random.Generator) -> Example:
    """Half normal, the abnormal ones' findings in turn; drawn at 192 to 320 pixels."""
    finding = FINDINGS[(k // 2) % len(FINDINGS)] if k % 2 else ""
    size = int(rng.choice([192, 256, 320]))
    ph = chest_radiograph(size, rng, finding)
    return ph.image, ph.abnormal, finding, ph.mask


def draw(
    n: int, seed: int, sample: Sampler = sample_chest
) -> tuple[Tensor, Tensor, list[str], list[np.ndarray]]:
    """``n`` examples scaled to the input size as the node scales them."""
    rng = np.random.default_rng(seed)
    images, labels, findings, masks = [], [], [], []
    for k in range(n):
        image, abnormal, finding, truth = sample(k, rng)
        images.append(scale_radiographs(torch.from_numpy(image)[None], SIZE).half())
        labels.append(float(abnormal))
        findings.append(finding)
        mask = torch.from_numpy(truth.astype(np.float32))[None, None]
        masks.append(F.interpolate(mask, size=SIZE, mode="area")[0, 0].numpy() > 0)
    return torch.cat(images), torch.tensor(labels), findings, masks


def train(cfg: Config, x: Tensor, y: Tensor, log: bool = True) -> AbnormalNet:
    torch.manual_seed(cfg.seed)
    model = AbnormalNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        for group in optimiser.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, len(x), (cfg.batch_size,), generator=generator)
        batch = x[pick].float()
        # contrast jitter on top of the generator's: the percentile scaling is not exact
        gain = 0.85 + 0.3 * torch.rand((len(pick), 1, 1, 1), generator=generator)
        batch = (batch * gain).clamp(0.0, 1.0)
        loss = F.binary_cross_entropy_with_logits(model(batch)[:, 0], y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if log and (step % 100 == 0 or step == cfg.steps - 1):
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.5f}", flush=True)
    return model.eval()


def export(model: AbnormalNet, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(model), str(path))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def probabilities_of(module: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    def probabilities(batch: Tensor) -> Tensor:
        with torch.inference_mode():
            return torch.sigmoid(module(batch.float()))

    return probabilities


#: The saliency map the node makes for this model (manifest ``postprocess.saliency``).
Saliency = Callable[[torch.nn.Module, Tensor], Tensor]


def occlusion(module: torch.nn.Module, image: Tensor) -> Tensor:
    """``saliency = true`` (occlusion), as ``infer/classify.py`` makes it."""
    return occlusion_saliency(probabilities_of(module), image.float(), 0)


def evaluate(
    module: torch.nn.Module,
    cfg: Config,
    sample: Sampler = sample_chest,
    saliency: Saliency = occlusion,
) -> dict[str, Any]:
    x, y, findings, masks = draw(cfg.eval_images, TEST_SEED_BASE, sample)
    probabilities = probabilities_of(module)

    scores = torch.cat([probabilities(x[i : i + 64]) for i in range(0, len(x), 64)])[:, 0]
    s, labels = scores.numpy(), y.numpy()
    positive = s >= THRESHOLD
    normal = labels == 0
    spec90 = float(np.quantile(s[normal], 0.9)) if normal.any() else 1.0
    kinds = sorted({f for f in findings if f}, key=findings.index)
    per_finding = {
        f: float(positive[[k for k, g in enumerate(findings) if g == f]].mean()) for f in kinds
    }
    hits = tried = 0
    for k in np.flatnonzero((labels == 1) & positive)[: cfg.saliency_images]:
        heat = saliency(module, x[k : k + 1].float())
        r, c = np.unravel_index(int(heat.argmax()), heat.shape)
        tried += 1
        hits += bool(masks[k][max(0, r - 8) : r + 9, max(0, c - 8) : c + 9].any())
    return {
        "images": len(s),
        "auc": auc(s, labels),
        "threshold": THRESHOLD,
        "sensitivity": float(positive[labels == 1].mean()),
        "specificity": float((~positive[normal]).mean()),
        "sensitivity_at_90_specificity": float((s[labels == 1] > spec90).mean()),
        "sensitivity_per_finding": per_finding,
        "saliency_pointing_game": {
            "images": tried,
            "hits": hits,
            "rate": hits / tried if tried else float("nan"),
            "rule": "saliency maximum within 8 input pixels of the finding's mask",
        },
    }


@dataclass(frozen=True)
class Task:
    """What a classifier's training script trains: its name, script, data and thresholds."""

    model: str
    script: str
    description: str
    sample: Sampler
    acceptance: dict[str, float]
    saliency: Saliency = occlusion


CHEST = Task(
    model="cxr-abnormal",
    script="models/cxr_abnormal/train.py",
    description=__doc__.split("\n\n")[0],
    sample=sample_chest,
    acceptance=ACCEPTANCE,
)


def main(argv: list[str] | None = None, task: Task = CHEST) -> int:
    parser = argparse.ArgumentParser(description=task.description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run (< 60 s) for CI")
    parser.add_argument("--evaluate-only", action="store_true", help="score --out/model.pt")
    args = parser.parse_args(argv)
    cfg = Config.smoke(args.seed) if args.smoke else Config(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parameters = None
    if not args.evaluate_only:
        x, y, _, _ = draw(cfg.train_images, cfg.seed, task.sample)
        print(f"training set: {len(x)} images in {time.perf_counter() - started:.1f} s", flush=True)
        model = train(cfg, x, y)
        del x
        export(model, args.out / "model.pt")
        parameters = count_parameters(model)
    module = torch.jit.load(str(args.out / "model.pt"))  # score what ships
    metrics = evaluate(module, cfg, task.sample, task.saliency)
    elapsed = time.perf_counter() - started
    run = run_record(
        task.model, task.script, argv or sys.argv[1:], smoke=args.smoke, config=asdict(cfg)
    )
    print(json.dumps(metrics, indent=2))
    path = args.out / "metrics.json"
    if args.evaluate_only:  # re-score what ships; the run record stays as trained
        if path.exists():
            record = json.loads(path.read_text())
            record.update(held_out=metrics, acceptance=task.acceptance, evaluated=run)
            path.write_text(json.dumps(record, indent=2) + "\n")
        return 0
    record = {
        **run,
        "parameters": parameters,
        "training_seconds": round(elapsed, 1),
        "held_out": metrics,
        "acceptance": task.acceptance,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"done in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
