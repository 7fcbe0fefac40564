"""Score the shipped kidney model on generated phantoms, enhanced and unenhanced apart.

``train.py`` scores its held-out set as generated (80 % contrast-enhanced); this prints
the same scores with the contrast phase forced, so the card can say how the model does
on each. Usage (from the repository's root)::

    python -m models.ct_kidney_tumour.evaluate [--phantoms 6] [--first-seed 20000]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from dicom_ai_node.testing.phantoms.kidney_ct import kidney_ct_phantom
from models._training.scoring import segment
from models.ct_kidney_tumour.train import INPUT_SIZE, score

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantoms", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=20_000)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        module = torch.jit.load(str(HERE / "model.pt"))
    print("phase       seed   kidney Dice  tumour Dice  tumour ml  volume error %")
    for contrast in (True, False):
        tumour_dice = []
        for seed in range(args.first_seed, args.first_seed + args.phantoms):
            spacing = (3.0, 1.4, 1.4)
            ph = kidney_ct_phantom(40, 256, spacing, seed, tumour=True, contrast=contrast)
            result = score(
                segment(module, ph.hu, INPUT_SIZE),
                ph.labels,
                np.prod(spacing) / 1000,
            )
            kidney, tumour = result["kidney"], result["tumour"]
            tumour_dice.append(tumour["dice"])
            print(
                f"{'enhanced' if contrast else 'unenhanced':<11} {seed}  {kidney['dice']:11.3f}"
                f"  {tumour['dice']:11.3f}  {tumour['true_volume_ml']:9.1f}"
                f"  {tumour['volume_error_pct']:14.1f}"
            )
        print(f"  mean tumour Dice {np.mean(tumour_dice):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
