"""Synthetic images for the experiment: read a generated dataset, or sample a generator once into a cache."""

from __future__ import annotations

import gc
import hashlib
import json
import time
from pathlib import Path

import datasets
import numpy as np

from ..data.datasets import load_image_dataset
from .config import CLASS_LORA, IMAGE_TO_IMAGE, ConfigError, SyntheticSource
from .mixing import INDEX_COLUMN, tag

CACHE_SPEC = "source.json"
#: Column of a filtered source's pool: whether the filter's judge accepts the image (dropped before training).
KEPT_COLUMN = "filter_kept"


def _prompt_template(source: SyntheticSource, names: list[str]) -> str:
    from ..generation.generator import GeneratorInfo
    from ..hub import resolve_model

    info = GeneratorInfo.load(resolve_model(source.generator))
    if info is not None and info.label_names:
        missing = sorted(set(names) - set(info.label_names))
        if missing:
            raise ConfigError(f"Synthetic source {source.name!r}: the generator {source.generator} was not trained on "
                              f"the classes {missing} (it knows {info.label_names}).")
    template = source.prompt_template or (info.prompt_template if info is not None else "")
    if "{name}" not in template:
        raise ConfigError(f"Synthetic source {source.name!r}: {source.generator} has no magic_generator.json prompt "
                          "form; set prompt_template (with {name}) in the source.")
    return template


def generated_pool(source: SyntheticSource, names: list[str], per_class: int, cache: Path,
                   real: datasets.Dataset | None = None) -> tuple[datasets.Dataset, dict]:
    """``per_class`` images of every class from ``source``'s generator, tagged and in job order (class by class,
    image 0 first), generated only where ``cache`` lacks them. Image-to-image sources translate images of
    ``real`` (the run's real training set) toward other classes. Returns the pool and facts about the generation
    (images made by this call, seconds)."""
    from ..generation.dataset import completed_jobs, count_plan, generate_dataset, translation_plan
    from ..hub import ModelNotFoundError, resolve_model

    try:  # a folder, an embedded LoRA or a Hub id: fail before any image is drawn
        lora_folder = resolve_model(source.lora) if source.lora else None
    except ModelNotFoundError as error:
        raise FileNotFoundError(f"Synthetic source {source.name!r}: LoRA {source.lora} not found ({error}). Make it "
                                "first, e.g. `python -m magic feedback-loop ... --output runs/feedback` writes "
                                "runs/feedback/lora.") from None
    class_loras = {}
    if source.class_loras:
        from ..generation.class_loras import find_class_loras

        class_loras = find_class_loras(source.class_loras, names)
    template = _prompt_template(source, names)
    translate = source.mode == IMAGE_TO_IMAGE
    if source.per_seed and real is None:
        raise ValueError(f"Synthetic source {source.name!r} is {source.mode}: pass the run's real training images.")
    spec = {**source.cache_key(), "prompt_template": template, "classes": names}
    if source.lora:  # the same folder retrained (a new feedback-loop run) must not reuse the old LoRA's images
        spec["lora_sha256"] = _weights_sha256(lora_folder)
    if class_loras:  # likewise for each class's LoRA
        spec["class_loras_sha256"] = {name: _weights_sha256(folder) for name, folder in class_loras.items()}
    if source.per_seed:  # the cache belongs to one real training set
        spec["real_rows"] = hashlib.sha256(np.asarray(real[INDEX_COLUMN], dtype=np.int64).tobytes()).hexdigest()
    cache.mkdir(parents=True, exist_ok=True)
    spec_path = cache / CACHE_SPEC
    if spec_path.is_file():
        cached = json.loads(spec_path.read_text())
        if cached != spec:
            raise ConfigError(f"The image cache {cache} was made with other settings ({cached}) than source "
                              f"{source.name!r} now has ({spec}); delete the folder or use a new --output.")
    else:
        spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    jobs = translation_plan(real, per_class, template, seed=source.seed,  # source_id: row of the real split
                            source_ids=[str(row) for row in real[INDEX_COLUMN]]) if translate else \
        count_plan(names, per_class, template, seed=source.seed)
    todo = [job for job in jobs if job.job_id not in completed_jobs(cache)]
    made, started = 0, time.time()
    if todo:
        from ..generation import GenerationSettings, Generator
        from ..generation.adapters import load_lora

        generator = Generator.from_pretrained(source.generator,
                                              device=None if source.device == "auto" else source.device)
        if source.lora:
            load_lora(generator.pipeline, source.lora)
        settings = GenerationSettings(steps=source.steps, guidance=source.guidance, seed=source.seed,
                                      strength=source.strength)
        if source.mode == CLASS_LORA:  # CytoDiff: a LoRA per class from the run's own real images, kept in the cache
            from ..generation.class_loras import generate_with_class_loras, train_class_loras

            loras = train_class_loras(generator, real, cache / "loras", source.class_lora, template,
                                      classes=sorted({job.label for job in todo}, key=names.index),
                                      source_ids=[str(row) for row in real[INDEX_COLUMN]])  # rows of the real split
            made = generate_with_class_loras(generator, jobs, cache, names, settings, loras,
                                             batch_size=source.batch_size)
        elif class_loras:  # a class with its own LoRA is drawn with it (e.g. the weakest class's)
            from ..generation.class_loras import generate_with_class_loras

            made = generate_with_class_loras(generator, jobs, cache, names, settings, class_loras,
                                             batch_size=source.batch_size, lora=source.lora,
                                             replace_loaded=source.class_loras_replace)
        else:
            made = generate_dataset(generator, jobs, cache, names, settings, source=real, lora=source.lora,
                                    batch_size=source.batch_size)
        del generator
        gc.collect()
        _empty_cuda_cache()
    pool = _read_shards(sorted((cache / "data").glob("train-*.parquet")))
    row_of = {job_id: row for row, job_id in enumerate(pool["job_id"])}
    pool = pool.select([row_of[job.job_id] for job in jobs])
    facts = {"generated": made, "generation_s": time.time() - started, "cache": str(cache),
             "prompt_template": template}
    tagged = tag(pool, f"synthetic:{source.name}", names)
    if not source.filter.enabled:
        return tagged, facts
    return _judged(source, pool, tagged, list(pool["job_id"]), names, cache, facts)


def _weights_sha256(folder: Path) -> str:
    """One hash of a LoRA folder's safetensors weights (what decides the images it draws)."""
    return hashlib.sha256(b"".join(path.read_bytes() for path in sorted(folder.glob("*.safetensors")))).hexdigest()


def _judged(source: SyntheticSource, pool: datasets.Dataset, tagged: datasets.Dataset, ids: list[str],
            names: list[str], folder: Path, facts: dict) -> tuple[datasets.Dataset, dict]:
    """``tagged`` with a KEPT_COLUMN saying which images ``source.filter`` accepts (scores cached in ``folder``),
    and ``facts`` with the counts generated and kept per class."""
    from ..generation.filtering import ImageFilter, cached_scores, kept_per_class

    started = time.time()
    image_filter = ImageFilter(source.filter)
    labels = [names[label] for label in tagged["label"]]
    scores = cached_scores(image_filter, ids, labels, lambda rows: pool.select(rows)["image"], folder)
    kept = image_filter.keep(scores)
    counts = kept_per_class(labels, kept, names)
    facts = {**facts, "filter": {"judge": source.filter.describe(), "per_class": counts,
                                 "kept_share": float(kept.mean()) if len(kept) else 0.0,
                                 "filter_s": time.time() - started}}
    return tagged.add_column(KEPT_COLUMN, [bool(keep) for keep in kept]), facts


def _read_shards(shards: list[Path]) -> datasets.Dataset:
    """The rows of parquet shards as one in-memory dataset (no datasets cache, so a grown cache is never stale)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable(pa.concat_tables([pq.read_table(shard) for shard in shards])))


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def source_pool(source: SyntheticSource, names: list[str], per_class: int, output_dir: Path,
                real: datasets.Dataset | None = None, seed: int | None = None,
                folder: str | None = None) -> tuple[datasets.Dataset, dict]:
    """The tagged pool of synthetic images of ``source`` with at least ``per_class`` images of every class
    (a dataset's own rows, or generated into ``output_dir/synthetic/FOLDER`` (default: the source's name), or
    for an image-to-image or per-class-LoRA source made from ``real``, the real training set of ``seed``, into
    ``output_dir/synthetic/FOLDER/seed-SEED``, the LoRAs under its ``loras/``), and facts about how it was made.
    With a filter, the pool has a boolean KEPT_COLUMN (the judge's verdict; rejected rows stay, so counts are of
    generated images) and the facts say how many images of each class it kept."""
    if source.dataset:
        rows = load_image_dataset(source.dataset, split=source.split)
        pool = tag(rows, f"synthetic:{source.name}", names)
        facts = {"generated": 0, "generation_s": 0.0, "dataset": source.dataset}
        if not source.filter.enabled:
            return pool, facts
        from ..generation.filtering import row_ids

        return _judged(source, rows, pool, row_ids(rows), names, Path(output_dir) / "synthetic" / source.name, facts)
    cache = Path(output_dir) / "synthetic" / (folder or source.name)
    if source.per_seed:
        cache = cache / f"seed-{seed}"
    return generated_pool(source, names, per_class, cache, real=real)
