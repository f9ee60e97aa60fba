"""Synthetic-dataset throughput of ``generate_dataset`` at several batch sizes, on one generator.

    python benchmarks/dataset_generation.py --generator magic-suite/wbc-generator --per-class 8 \
        --batch-sizes 1 8 32 --output benchmarks/results/dataset_generation_cpu.json

Writes the same plan (``--per-class`` text-to-image images of every class of the generator, fixed seeds) into a
fresh dataset folder once per batch size, timing the whole call (sampling, PNG encoding, parquet shards), and
compares every batched dataset with the one-at-a-time one, image by image: the largest difference in grey levels
is reported (rounding only: the same seeds give the same images). One JSON object is printed (and written with
--output).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.report import emit  # noqa: E402
from magic.generation import GenerationSettings, Generator  # noqa: E402
from magic.generation.dataset import count_plan, generate_dataset  # noqa: E402


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {row["job_id"]: np.asarray(row["image"], dtype=np.int16)
            for row in datasets.load_dataset(str(folder), split="train")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="magic-suite/wbc-generator")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--device", default=None, help="Default: CUDA when there is one, else the CPU.")
    parser.add_argument("--output", default="")
    args = parser.parse_args()

    generator = Generator.from_pretrained(args.generator, device=args.device)
    if generator.info is None:
        raise SystemExit(f"{args.generator} has no magic_generator.json: this benchmark needs its classes and prompt.")
    names = list(generator.info.label_names)
    jobs = count_plan(names, args.per_class, generator.info.prompt_template)
    settings = GenerationSettings(steps=args.steps, guidance=args.guidance)
    sizes = sorted(set(args.batch_sizes) | {1})
    runs, folders = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for batch_size in sizes:
            folder = Path(scratch) / f"batch-{batch_size}"
            started = time.perf_counter()
            written = generate_dataset(generator, jobs, folder, names, settings, batch_size=batch_size)
            seconds = time.perf_counter() - started
            folders[batch_size] = folder
            runs.append({"batch_size": batch_size, "images": written, "seconds": round(seconds, 2),
                         "images_per_s": round(written / seconds, 3)})
        single = _pixels(folders[1])
        for run in runs:
            batched = _pixels(folders[run["batch_size"]])
            run["max_grey_level_difference_vs_batch_1"] = max(int(np.abs(batched[key] - single[key]).max())
                                                              for key in single)
            run["speedup_vs_batch_1"] = round(run["images_per_s"] / runs[0]["images_per_s"], 2)
    emit({"generator": args.generator, "device": str(generator.device), "dtype": str(generator.pipeline.unet.dtype),
          "denoising_steps": args.steps, "guidance": args.guidance, "classes": len(names),
          "per_class": args.per_class, "runs": runs, "torch_threads": torch.get_num_threads(),
          "machine": f"{platform.machine()} {os.cpu_count()} cores"
                     + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")}, args.output)


if __name__ == "__main__":
    main()
