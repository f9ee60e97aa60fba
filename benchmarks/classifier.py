"""Benchmark a classifier on a fixed test split: quality (accuracy, macro-F1, per-class recall) and speed.

    python benchmarks/classifier.py --model magic-suite/wbc-classifier --data ../shared/data/pbc

Writes one JSON object (stdout and, with --output, a file) with the metrics, inference images/s at the given
batch size on the chosen device, and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.report import emit  # noqa: E402
from magic.classifiers import evaluate_classifier, load_classifier  # noqa: E402
from magic.classifiers.train import resolve_device  # noqa: E402
from magic.data import load_image_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="magic-suite/wbc-classifier")
    parser.add_argument("--data", default="../shared/data/pbc")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default="", help="Also write the JSON here.")
    args = parser.parse_args()

    device = resolve_device(args.device)
    classifier = load_classifier(args.model, device=device)
    dataset = load_image_dataset(args.data, split=args.split)
    started = time.perf_counter()
    result = evaluate_classifier(classifier, dataset, batch_size=args.batch_size, progress=False)
    elapsed = time.perf_counter() - started

    images = [dataset[i]["image"].convert("RGB") for i in range(min(256, len(dataset)))]
    classifier.predict_proba(images[: args.batch_size], batch_size=args.batch_size)  # warm-up
    started = time.perf_counter()
    classifier.predict_proba(images, batch_size=args.batch_size)
    predict_rate = len(images) / (time.perf_counter() - started)

    report = {
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "accuracy": result.accuracy,
        "macro_f1": result.macro_f1,
        "per_class_recall": result.per_class_recall,
        "n": result.n,
        "nll_calibrated": result.nll,
        "eval_images_per_s_with_decoding": result.n / elapsed,
        "predict_images_per_s": predict_rate,
        "batch_size": args.batch_size,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
    }
    emit(report, args.output)


if __name__ == "__main__":
    main()
