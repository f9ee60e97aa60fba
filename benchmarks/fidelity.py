"""Class fidelity and Frechet distance of a generator, judged by a separate classifier on a real test split.

    python benchmarks/fidelity.py --generator magic-suite/wbc-generator --judge JUDGE_FOLDER \
        --data ../shared/data/pbc-64 --per-class 128 --guidance 3 5 7 --output benchmarks/results/wbc_fidelity.json

The judge must be a classifier the generator never used (the shipped figures use a ResNet18 trained from scratch
on pbc-64: see the README for its command). For every guidance scale, ``--per-class`` text-to-image images of each
class are generated (seeds 0, 1, ...) and judged; the report also gives the judge's accuracy on the real split, on
the real split resized to the generator's size (what the resolution alone costs), and on it passed through the
generator's VAE (the ceiling the VAE allows), and the PSNR of that round trip.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.report import emit  # noqa: E402
from magic.classifiers import load_classifier  # noqa: E402
from magic.data import load_image_dataset  # noqa: E402
from magic.evaluation.fidelity import (  # noqa: E402
    class_fidelity,
    generate_per_class,
    judge_outputs,
    reconstruction_psnr,
)
from magic.generation import GenerationSettings, Generator  # noqa: E402
from magic.generation.adapters import load_lora  # noqa: E402
from magic.generation.class_loras import find_class_loras  # noqa: E402


@torch.inference_mode()
def vae_round_trip(generator: Generator, images: list[Image.Image], batch_size: int = 128
                   ) -> tuple[list[Image.Image], list[Image.Image]]:
    """``images`` as RGB at the generator's size, and their encode-decode round trips through its VAE (posterior
    mean)."""
    pipeline = generator.pipeline
    size = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    inputs = [image.convert("RGB").resize((size, size), Image.BICUBIC) for image in images]
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        pixels = torch.from_numpy(np.stack([np.asarray(image) for image in batch])).permute(0, 3, 1, 2)
        pixels = (pixels.float() / 127.5 - 1).to(pipeline.device, pipeline.vae.dtype)
        decoded = pipeline.vae.decode(pipeline.vae.encode(pixels).latent_dist.mode()).sample
        array = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        out += [Image.fromarray(a) for a in array]
    return inputs, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True, help="Pipeline folder or model id.")
    parser.add_argument("--lora", default=None, help="A LoRA folder to load into the generator first (e.g. the "
                        "feedback loop's runs/feedback/lora).")
    parser.add_argument("--class-loras", default=None, help="A folder of per-class LoRAs (FOLDER/CLASS, as "
                        "train-class-loras writes them): each class that has one is drawn with it, on top of "
                        "--lora.")
    parser.add_argument("--class-loras-replace", action="store_true", help="Draw a class that has its own LoRA "
                        "without --lora (which then draws only the other classes).")
    parser.add_argument("--judge", required=True, help="Classifier folder or id (not used to train the generator).")
    parser.add_argument("--data", required=True, help="Real dataset with the same classes.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-class", type=int, default=128)
    parser.add_argument("--guidance", type=float, nargs="*", default=[5.0],
                        help="Guidance scales to measure; none (a bare --guidance): only the VAE's ceiling.")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prompt-template", default=None, help="Default: the generator's own (magic_generator.json).")
    parser.add_argument("--device", default=None)
    parser.add_argument("--save-grid", default=None, help="Write a PNG grid of the first 8 images of each class.")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    generator = Generator.from_pretrained(args.generator, device=args.device)
    if args.lora:
        load_lora(generator.pipeline, args.lora)
    judge = load_classifier(args.judge, device=generator.device)
    real = load_image_dataset(args.data, split=args.split)
    names = real.features["label"].names
    class_loras = find_class_loras(args.class_loras, names) if args.class_loras else None
    template = args.prompt_template or (generator.info.prompt_template if generator.info else None)
    if template is None:
        parser.error("The generator has no magic_generator.json; pass --prompt-template.")
    real_images, real_labels = [row["image"] for row in real], list(real["label"])

    to_judge = np.array([judge.label_names.index(name) for name in names])
    truth = to_judge[real_labels]
    real_predictions, _ = judge_outputs(judge, real_images)
    round_trip_inputs, reconstructions = vae_round_trip(generator, real_images)
    resized_predictions, _ = judge_outputs(judge, round_trip_inputs)  # what resizing alone costs, without the VAE
    reconstructed_predictions, _ = judge_outputs(judge, reconstructions)
    vae_ceiling = float((reconstructed_predictions == truth).mean())
    psnr = reconstruction_psnr(round_trip_inputs, reconstructions)

    def per_class(predictions: np.ndarray) -> dict[str, float]:
        return {name: float((predictions[truth == to_judge[i]] == to_judge[i]).mean()) for i, name in enumerate(names)}

    runs = []
    for guidance in args.guidance:
        settings = GenerationSettings(steps=args.steps, guidance=guidance, seed=0)
        started = time.perf_counter()
        images, requested = generate_per_class(generator, names, template, args.per_class, settings,
                                               batch_size=args.batch_size, class_loras=class_loras,
                                               replace_loaded=args.class_loras_replace)
        seconds = time.perf_counter() - started
        report = class_fidelity(images, requested, judge, real_images, real_labels, names)
        runs.append({"guidance": guidance, "steps": args.steps, "generation_seconds": round(seconds, 1),
                     **report.to_dict()})
        if args.save_grid and guidance == args.guidance[-1]:
            _save_grid(images, requested, len(names), args.save_grid)
    result = {
        "generator": args.generator, "lora": args.lora, "class_loras": args.class_loras,
        "class_loras_replace": args.class_loras_replace, "judge": args.judge,
        "data": args.data, "split": args.split,
        "prompt_template": template, "judge_accuracy_on_real": float((real_predictions == truth).mean()),
        "judge_per_class_on_real": per_class(real_predictions),
        "judge_accuracy_on_real_at_generator_size": float((resized_predictions == truth).mean()),
        "judge_per_class_on_real_at_generator_size": per_class(resized_predictions),
        "judge_accuracy_on_vae_reconstructions": vae_ceiling,
        "judge_per_class_on_vae_reconstructions": per_class(reconstructed_predictions),
        "vae_psnr_db": float(psnr.mean()),
        "vae_psnr_per_class_db": {name: float(psnr[truth == to_judge[i]].mean()) for i, name in enumerate(names)},
        "runs": runs,
        "device": str(generator.device), "dtype": str(generator.pipeline.unet.dtype), "machine": platform.processor()
        or platform.machine(), "torch_threads": torch.get_num_threads(),
    }
    emit(result, args.output)
    return result


def _save_grid(images: list[Image.Image], labels: list[int], classes: int, path: str, columns: int = 8) -> None:
    size = images[0].width
    grid = Image.new("RGB", (columns * size, classes * size), "white")
    for label in range(classes):
        chosen = [image for image, requested in zip(images, labels) if requested == label][:columns]
        for column, image in enumerate(chosen):
            grid.paste(image, (column * size, label * size))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


if __name__ == "__main__":
    main()
