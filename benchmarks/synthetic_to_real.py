"""Classification Accuracy Score: a classifier trained on a generator's images only, tested on real images.

    python benchmarks/synthetic_to_real.py --generator magic-suite/wbc-generator \
        --lora magic-suite/wbc-generator-feedback-lora --data ../shared/data/pbc-64 --per-class 128 --guidance 7 \
        --real-reference --output benchmarks/results/wbc_synthetic_to_real.json

Class fidelity asks a judge trained on real images to recognise generated ones, so a generator (or decoder) tuned
against other classifiers of the same data can raise it with features that any such classifier keys on without
the images carrying more of what makes the class (Ravuri & Vinyals 2019, "Classification Accuracy Score for
conditional generative models"). This benchmark asks the converse: are the images enough to *learn* the classes?
For every guidance scale it draws ``--per-class`` text-to-image images per class (seeds 0, 1, ..., as
``fidelity.py``), trains a ResNet18 from scratch on them alone (the judge's recipe, fixed epochs, no real image seen
in training or model selection) and reports accuracy and macro-F1 on the real test split. ``--real-reference``
adds the same classifier trained on as many real training images per class (the ceiling at that size).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datasets  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.report import emit  # noqa: E402
from magic.classifiers.evaluate import evaluate_classifier  # noqa: E402
from magic.classifiers.train import TrainConfig, train_classifier  # noqa: E402
from magic.data import load_image_dataset  # noqa: E402
from magic.data.subsets import k_shot  # noqa: E402
from magic.evaluation.fidelity import generate_per_class  # noqa: E402
from magic.generation import GenerationSettings, Generator  # noqa: E402
from magic.generation.adapters import load_lora  # noqa: E402
from magic.generation.class_loras import find_class_loras  # noqa: E402


def as_dataset(images: list[Image.Image], labels: list[int], names: list[str]) -> datasets.Dataset:
    """An image-classification ``datasets.Dataset`` (image + ClassLabel label) of in-memory images."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def train_and_test(train: datasets.Dataset, test: datasets.Dataset, args: argparse.Namespace, seed: int) -> dict:
    """Train the benchmark's classifier on ``train`` (no validation split) and evaluate it on ``test``."""
    config = TrainConfig(architecture=args.architecture, pretrained=False, image_size=args.image_size,
                         epochs=args.epochs, batch_size=64, lr=2e-3, warmup_steps=50, balance="none",
                         num_workers=0, device=args.device or "auto", seed=seed, fit_ood=False)
    started = time.perf_counter()
    classifier = train_classifier(config, train)
    seconds = time.perf_counter() - started
    result = evaluate_classifier(classifier, test, progress=False)
    return {"seed": seed, "accuracy": result.accuracy, "macro_f1": result.macro_f1,
            "per_class_recall": result.per_class_recall, "train_images": len(train),
            "train_seconds": round(seconds, 1)}


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over the training seeds, with the runs themselves."""
    accuracy, f1 = [run["accuracy"] for run in runs], [run["macro_f1"] for run in runs]
    spread = statistics.stdev if len(runs) > 1 else (lambda values: 0.0)
    return {"accuracy_mean": statistics.mean(accuracy), "accuracy_std": spread(accuracy),
            "macro_f1_mean": statistics.mean(f1), "macro_f1_std": spread(f1), "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True, help="Pipeline folder or model id.")
    parser.add_argument("--lora", default=None, help="A LoRA folder or id to load into the generator first.")
    parser.add_argument("--class-loras", default=None, help="A folder of per-class LoRAs (FOLDER/CLASS, as "
                        "train-class-loras writes them): each class that has one is drawn with it, on top of "
                        "--lora.")
    parser.add_argument("--class-loras-replace", action="store_true", help="Draw a class that has its own LoRA "
                        "without --lora (which then draws only the other classes).")
    parser.add_argument("--data", required=True, help="Real dataset with the generator's classes (train + test).")
    parser.add_argument("--split", default="test", help="The real split the classifiers are tested on.")
    parser.add_argument("--per-class", type=int, default=128)
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.0])
    parser.add_argument("--steps", type=int, default=30, help="Denoising steps.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Classifier training seeds.")
    parser.add_argument("--epochs", type=float, default=40)
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--real-reference", action="store_true",
                        help="Also train on --per-class real training images per class (same recipe).")
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    test = load_image_dataset(args.data, split=args.split)
    names = test.features["label"].names
    generator = Generator.from_pretrained(args.generator, device=args.device)
    if generator.info is None:
        parser.error("The generator has no magic_generator.json (its classes and prompt template).")
    missing = sorted(set(names) - set(generator.info.label_names))
    if missing:
        parser.error(f"The generator does not draw the test split's classes {missing}.")
    if args.lora:
        load_lora(generator.pipeline, args.lora)
    class_loras = find_class_loras(args.class_loras, names) if args.class_loras else None

    arms = []
    for guidance in args.guidance:
        started = time.perf_counter()
        images, labels = generate_per_class(generator, names, generator.info.prompt_template, args.per_class,
                                            GenerationSettings(steps=args.steps, guidance=guidance, seed=0),
                                            class_loras=class_loras, replace_loaded=args.class_loras_replace)
        seconds = time.perf_counter() - started
        synthetic = as_dataset(images, labels, names)
        arms.append({"train_on": "synthetic", "guidance": guidance, "steps": args.steps,
                     "generation_seconds": round(seconds, 1),
                     **summarise([train_and_test(synthetic, test, args, seed) for seed in args.seeds])})
    if args.real_reference:
        real = k_shot(load_image_dataset(args.data, split="train"), args.per_class, seed=0)
        arms.append({"train_on": "real", **summarise([train_and_test(real, test, args, seed) for seed in args.seeds])})
    result = {"generator": args.generator, "lora": args.lora, "class_loras": args.class_loras,
              "class_loras_replace": args.class_loras_replace, "data": args.data,
              "split": args.split,
              "per_class": args.per_class, "architecture": args.architecture, "image_size": args.image_size,
              "epochs": args.epochs, "arms": arms, "device": str(generator.device),
              "machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()}
    emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
