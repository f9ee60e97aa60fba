"""Write synthetic datasets Hub-shaped (parquet shards + card) with per-image provenance, resumably.

Every image is a *job* with a unique id and its own seed, so a run killed at any point resumes where its last
complete shard ended: finished jobs are skipped, the rest regenerate exactly (same seeds), nothing is duplicated.
Jobs are drawn in batches fixed by their place in the plan (jobs 0..B-1, B..2B-1, ...) and shards end on batch
boundaries, so a resumed run forms the same batches and reproduces the same pixels.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .generator import GenerationSettings, Generator

SHARD_PATTERN = "train-{:05d}.parquet"


@dataclass(frozen=True)
class Job:
    """One image to generate: its class, prompt, seed and, for image-to-image, its source."""

    job_id: str
    label: str
    prompt: str
    seed: int
    source_label: str | None = None
    source_id: str | None = None
    source_index: int | None = None


def count_plan(class_names: list[str], per_class: int, prompt_template: str, seed: int = 0) -> list[Job]:
    """``per_class`` text-to-image jobs for each class, prompts from ``prompt_template`` (with ``{name}``)."""
    if "{name}" not in prompt_template:
        raise ValueError("prompt_template must contain {name}, e.g. 'a microscopy image of a {name} white blood cell'.")
    return [Job(f"t2i-{name}-{i:06d}", name, prompt_template.format(name=name.replace("_", " ")),
                seed + 1_000_003 * c + i)
            for c, name in enumerate(class_names) for i in range(per_class)]


def magic_plan(source: datasets.Dataset, prompt_template: str, seed: int = 0) -> list[Job]:
    """MAGIC's rule: one image-to-image job per real image, toward a condition other than its own (chosen by seed)."""
    names = source.features["label"].names
    if len(names) < 2:
        raise ValueError("The MAGIC rule needs at least two conditions.")
    rng = np.random.default_rng(seed)
    ids = source["source_file"] if "source_file" in source.column_names else [str(i) for i in range(len(source))]
    jobs = []
    for index, (label, source_id) in enumerate(zip(source["label"], ids)):
        target = int(rng.choice([c for c in range(len(names)) if c != label]))
        jobs.append(Job(f"i2i-{index:07d}", names[target], prompt_template.format(name=names[target].replace("_", " ")),
                        seed + index, source_label=names[label], source_id=str(source_id), source_index=index))
    return jobs


def translation_plan(source: datasets.Dataset, per_class: int, prompt_template: str, seed: int = 0,
                     source_ids: list[str] | None = None) -> list[Job]:
    """MAGIC's rule with a count: ``per_class`` image-to-image jobs toward each class, each from a real image of
    another class. Sources are taken in a seeded order that cycles through every other-class image before any
    repeats; job ``i`` of a class is the same whatever ``per_class`` is, so a larger count extends a smaller one.
    ``source_ids`` names the source rows in the provenance (default: ``source_file``, else the row number)."""
    names = source.features["label"].names
    if len(names) < 2:
        raise ValueError("The MAGIC rule needs at least two conditions.")
    labels = np.asarray(source["label"])
    ids = source_ids if source_ids is not None else source["source_file"] if "source_file" in source.column_names \
        else [str(i) for i in range(len(source))]
    jobs = []
    for c, name in enumerate(names):
        others = np.flatnonzero(labels != c)
        if not len(others):
            raise ValueError(f"No image of a class other than {name!r} to translate from.")
        order = np.random.default_rng([seed, c]).permutation(others)
        prompt = prompt_template.format(name=name.replace("_", " "))
        for i in range(per_class):
            index = int(order[i % len(order)])
            jobs.append(Job(f"i2i-{name}-{i:06d}", name, prompt, seed + 1_000_003 * c + i,
                            source_label=names[labels[index]], source_id=str(ids[index]), source_index=index))
    return jobs


def _features(class_names: list[str]) -> datasets.Features:
    return datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=class_names), "prompt": datasets.Value("string"),
        "seed": datasets.Value("int64"), "job_id": datasets.Value("string"), "mode": datasets.Value("string"),
        "source_label": datasets.Value("string"), "source_id": datasets.Value("string"),
        "model_id": datasets.Value("string"), "model_revision": datasets.Value("string"),
        "lora": datasets.Value("string"), "guidance": datasets.Value("float32"), "steps": datasets.Value("int32"),
        "strength": datasets.Value("float32"),
    })


def completed_jobs(output: str | os.PathLike) -> set[str]:
    """Job ids already written in complete shards of ``output``."""
    done = set()
    for shard in sorted((Path(output) / "data").glob("train-*.parquet")):
        done.update(pq.read_table(shard, columns=["job_id"]).column("job_id").to_pylist())
    return done


def _write_shard(rows: dict[str, list], features: datasets.Features, output: Path) -> Path:
    shards = sorted((output / "data").glob("train-*.parquet"))
    path = output / "data" / SHARD_PATTERN.format(len(shards))
    partial = path.with_suffix(".parquet.partial")
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(partial))
    os.replace(partial, path)  # a shard appears whole or not at all
    return path


def generate_dataset(
    generator: Generator,
    jobs: list[Job],
    output: str | os.PathLike,
    class_names: list[str],
    settings: GenerationSettings,
    source: datasets.Dataset | None = None,
    shard_size: int = 256,
    lora: str = "",
    limit: int | None = None,
    batch_size: int = 1,
) -> int:
    """Run every job not yet in ``output``; returns how many images this call wrote.

    ``source`` is the real dataset image-to-image jobs read their source images from. ``limit`` stops after that
    many new images (for budgets; a later call resumes). ``batch_size`` images are drawn per pipeline call (several
    times faster on a CPU or GPU than one at a time); ``shard_size`` is rounded up to a multiple of it. A batched
    image matches the single-image one of its seed up to rounding (about one grey level); the same ``batch_size``
    reproduces it exactly, resumed or not.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}.")
    shard_size = -(-shard_size // batch_size) * batch_size
    output = Path(output)
    (output / "data").mkdir(parents=True, exist_ok=True)
    for stale in (output / "data").glob("*.partial"):
        stale.unlink()
    done = completed_jobs(output)
    todo = [job for job in jobs if job.job_id not in done]
    if limit is not None:
        todo = todo[:limit]
    if any(job.source_index is not None for job in todo) and source is None:
        raise ValueError("These jobs are image-to-image: pass the source dataset they were planned from.")
    features = _features(class_names)
    rows: dict[str, list] = {name: [] for name in features}
    written = 0
    progress = tqdm(total=len(todo), desc="generate", unit="img")
    place = {job.job_id: index for index, job in enumerate(jobs)}
    batches = itertools.groupby(todo, key=lambda job: (place[job.job_id] // batch_size, job.source_index is None))
    for (_, text_only), batch in batches:
        batch = list(batch)
        seeds = [job.seed for job in batch]
        prompts = [job.prompt for job in batch]
        if text_only:
            images = generator.text_to_image(prompts, settings, seeds=seeds)
        else:
            images = generator.image_to_image([source[job.source_index]["image"] for job in batch], prompts, settings,
                                              seeds=seeds)
        for job, image in zip(batch, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            record = {"image": {"bytes": buffer.getvalue(), "path": None}, "label": job.label, "prompt": job.prompt,
                      "seed": job.seed, "job_id": job.job_id, "mode": "t2i" if job.source_index is None else "i2i",
                      "source_label": job.source_label, "source_id": job.source_id, "model_id": generator.model_id,
                      "model_revision": generator.revision or "", "lora": lora, "guidance": settings.guidance,
                      "steps": settings.steps, "strength": settings.strength if job.source_index is not None else 0.0}
            for name, value in record.items():
                rows[name].append(value)
        progress.update(len(batch))
        if len(rows["job_id"]) >= shard_size:
            _write_shard(rows, features, output)
            written += len(rows["job_id"])
            rows = {name: [] for name in features}
    if rows["job_id"]:
        _write_shard(rows, features, output)
        written += len(rows["job_id"])
    progress.close()
    return written


def write_dataset_card(output: str | os.PathLike, class_names: list[str], model_id: str, settings: GenerationSettings,
                       license: str, source_dataset: str = "", description: str = "") -> Path:
    """A dataset card (README.md) with Hub metadata, how the images were made, and the per-class counts."""
    from huggingface_hub import DatasetCard, DatasetCardData

    labels = []
    for shard in sorted((Path(output) / "data").glob("train-*.parquet")):
        labels += pq.read_table(shard, columns=["label"]).column("label").to_pylist()
    counts = {name: labels.count(index) for index, name in enumerate(class_names)}
    data = DatasetCardData(license=license, task_categories=["image-classification"],
                           tags=["synthetic", "medical-imaging", "magic-suite"],
                           source_datasets=[source_dataset] if source_dataset else None, pretty_name=Path(output).name)
    rows = "\n".join(f"| {name} | {count} |" for name, count in counts.items())
    content = (f"---\n{data.to_yaml()}\n---\n\n# {Path(output).name}\n\n{description}\n\n"
               "> Synthetic images for research on data augmentation. **Not patient data and not for diagnosis.**\n\n"
               f"Generated by `{model_id}` with {json.dumps(asdict(settings))}. Every row records its prompt, seed, "
               "source image (image-to-image), model id and revision, LoRA, guidance and steps.\n\n"
               f"| class | images |\n|---|---|\n{rows}\n")
    path = Path(output) / "README.md"
    DatasetCard(content).save(path)
    return path
