"""How often a classifier answers "out of distribution" or "unsure" instead of a class, per kind of input.

    python benchmarks/rejection.py --model magic-suite/skin-classifier --data ../shared/data/ham10000 \\
        --foreign ../shared/data/pbc --output benchmarks/results/skin_rejection.json

Inputs: the model's own test split (real, in distribution: rejections here are false alarms), the test split of a
foreign dataset (e.g. blood cells for the skin model), blank images of random uniform colours, and uniform RGB noise.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.report import emit  # noqa: E402
from magic.classifiers import load_classifier  # noqa: E402
from magic.data import load_image_dataset  # noqa: E402


def _sample(data: str, split: str, count: int, seed: int) -> list[Image.Image]:
    dataset = load_image_dataset(data, split=split)
    indices = np.random.default_rng(seed).permutation(len(dataset))[:count]
    return [dataset[int(i)]["image"].convert("RGB") for i in indices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="The model's own dataset (its test split is used).")
    parser.add_argument("--foreign", required=True, help="Another dataset whose images the model must not accept.")
    parser.add_argument("--count", type=int, default=500, help="Images per kind (dataset kinds: at most the split).")
    parser.add_argument("--min-confidence", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="")
    args = parser.parse_args()

    classifier = load_classifier(args.model)
    rng = np.random.default_rng(args.seed)
    size = classifier.preprocess.input_size[-1]
    kinds = {
        "own test split (in distribution)": _sample(args.data, "test", args.count, args.seed),
        f"foreign: {Path(args.foreign).name} test split": _sample(args.foreign, "test", args.count, args.seed),
        "blank (uniform colour)": [Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
                                   for _ in range(args.count)],
        "uniform RGB noise": [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                              for _ in range(args.count)],
    }
    report = {"model": args.model, "min_confidence": args.min_confidence,
              "ood_threshold": float(classifier.ood.semantic.threshold) if classifier.ood is not None else None,
              "residual_threshold": (float(classifier.ood.semantic.residual_threshold) if classifier.ood is not None
                                     else None),
              "style_check": classifier.ood is not None and classifier.ood.style is not None,
              "kinds": {}}
    for kind, images in kinds.items():
        statuses = Counter()
        for start in range(0, len(images), 64):
            for verdict in classifier.assess(images[start:start + 64], min_confidence=args.min_confidence):
                statuses[verdict.status] += 1
        n = len(images)
        report["kinds"][kind] = {
            "n": n,
            "out_of_distribution": statuses["out_of_distribution"] / n,
            "unsure": statuses["unsure"] / n,
            "rejected (either)": (statuses["out_of_distribution"] + statuses["unsure"]) / n,
        }
    emit(report, args.output)


if __name__ == "__main__":
    main()
