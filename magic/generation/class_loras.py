"""CytoDiff's adaptation: one LoRA per class, each learnt from k real images of that class, then used to draw that
class's synthetic images.

Every LoRA is trained on a private clone of the generator (the base stays untouched) and saved in diffusers'
format under ``OUTPUT/CLASS`` with a card, so it loads with ``pipe.load_lora_weights`` anywhere. A finished class
is skipped on a rerun; sampling with the LoRAs goes through ``generate_dataset``, so it resumes the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np

from ..hub import LORA_WEIGHTS
from .adapters import load_lora, save_lora
from .dataset import Job, completed_jobs, generate_dataset
from .generator import GenerationSettings, Generator
from .train import DenoiserTrainConfig, train_denoiser

LORA_SETTINGS = "magic_class_lora.json"


@dataclass
class ClassLoRAConfig:
    """How each class's LoRA is learnt (CytoDiff: rank 16 from 16 real images per class)."""

    shots: int = field(default=16, metadata={
        "help": "Real images per class each LoRA learns from (a class with fewer uses all it has)."})
    rank: int = field(default=16, metadata={"help": "LoRA rank on the UNet's attention projections."})
    steps: int = field(default=300, metadata={"help": "Optimiser steps per class."})
    batch_size: int = field(default=8, metadata={"help": "Images per step (drawn from the class's shots)."})
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW, warmup + cosine)."})
    seed: int = field(default=0, metadata={"help": "Seed that picks the shots and drives training."})

    def __post_init__(self):
        if self.shots < 1 or self.rank < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"shots, rank, steps and batch_size must be >= 1, got {asdict(self)}.")

    def to_dict(self) -> dict:
        return asdict(self)


def pick_shots(dataset: datasets.Dataset, shots: int, seed: int = 0) -> dict[str, list[int]]:
    """Row indices of up to ``shots`` images of every class in ``dataset`` (seeded; classes without images are
    left out)."""
    names = dataset.features["label"].names
    labels = np.asarray(dataset["label"])
    picked = {}
    for c, name in enumerate(names):
        rows = np.flatnonzero(labels == c)
        if len(rows):
            order = np.random.default_rng([seed, c]).permutation(rows)
            picked[name] = sorted(int(i) for i in order[:shots])
    return picked


def train_class_loras(
    generator: Generator,
    dataset: datasets.Dataset,
    output: str | os.PathLike,
    config: ClassLoRAConfig,
    prompt_template: str,
    classes: Sequence[str] | None = None,
    source_ids: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Train one LoRA per class of ``dataset`` (or only ``classes``) from ``config.shots`` of its images and save
    each in ``output/CLASS``; returns the folders by class. Classes whose folder is complete are not retrained.

    Each folder's ``magic_class_lora.json`` names the images it learnt from by ``source_ids`` (one per dataset row;
    default: the ``source_file`` column, else the row number)."""
    if "{name}" not in prompt_template:
        raise ValueError("prompt_template must contain {name}, e.g. 'a microscopy image of a {name} white blood cell'.")
    output = Path(output)
    if source_ids is None:
        source_ids = dataset["source_file"] if "source_file" in dataset.column_names else \
            [str(i) for i in range(len(dataset))]
    shots = pick_shots(dataset, config.shots, config.seed)
    wanted = list(classes) if classes is not None else list(shots)
    missing = [name for name in wanted if name not in shots]
    if missing:
        raise ValueError(f"No real image of {missing} to learn a LoRA from; the dataset has {sorted(shots)}.")
    names = dataset.features["label"].names
    folders = {}
    for name in wanted:
        folder = output / name
        if not (folder / "pytorch_lora_weights.safetensors").is_file():  # written last: the mark of a finished class
            rows = shots[name]
            clone = generator.clone()
            train_denoiser(clone.pipeline, [dataset[i]["image"] for i in rows],
                           [prompt_template.format(name=name.replace("_", " "))] * len(rows),
                           DenoiserTrainConfig(method="lora", lora_rank=config.rank, steps=config.steps,
                                               batch_size=config.batch_size, lr=config.lr,
                                               warmup_steps=min(50, config.steps // 10),
                                               seed=config.seed + names.index(name)))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / LORA_SETTINGS).write_text(json.dumps(
                {"class": name, "base_model": generator.model_id, "prompt_template": prompt_template,
                 "real_images": len(rows), "source_ids": [str(source_ids[i]) for i in rows],
                 **config.to_dict()}, indent=1) + "\n")
            _class_lora_card(generator, name, len(rows), config).save(folder / "README.md")
            save_lora(clone.pipeline, folder)
            del clone
        folders[name] = folder
    return folders


def find_class_loras(folder: str | os.PathLike, classes: Sequence[str]) -> dict[str, Path]:
    """The finished LoRA folders ``folder/CLASS`` (as ``train_class_loras`` writes them) of those ``classes`` that
    have one; raises when ``folder`` is not a folder or holds none of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of class LoRAs (FOLDER/CLASS, as train-class-loras "
                                "writes them).")
    found = {name: folder / name for name in classes if (folder / name / LORA_WEIGHTS).is_file()}
    if not found:
        raise ValueError(f"{folder} holds a LoRA for none of the classes {list(classes)}; train them with "
                         "python -m magic train-class-loras --output FOLDER.")
    return found


def with_class_lora(generator: Generator, lora: str | os.PathLike, replace_loaded: bool = False) -> Generator:
    """A clone of ``generator`` with a class's LoRA loaded, on top of any LoRA ``generator`` already has
    (``replace_loaded``: instead of it); ``generator`` itself is left as it was."""
    clone = generator.clone()
    loaded = list(getattr(clone.pipeline.unet, "peft_config", None) or {})  # e.g. a feedback LoRA
    if replace_loaded and loaded:
        clone.pipeline.delete_adapters(loaded)
        loaded = []
    load_lora(clone.pipeline, lora, adapter_name="class-lora")
    clone.pipeline.set_adapters(loaded + ["class-lora"])
    return clone


def generate_with_class_loras(
    generator: Generator,
    jobs: list[Job],
    output: str | os.PathLike,
    class_names: list[str],
    settings: GenerationSettings,
    loras: dict[str, str | os.PathLike],
    shard_size: int = 256,
    batch_size: int = 1,
) -> int:
    """Run text-to-image ``jobs`` with each job's class LoRA loaded (on a clone); returns the images written.
    Resumable (and batched) like ``generate_dataset``; each row's ``lora`` column names the folder it came from."""
    done = completed_jobs(output)
    without = sorted({job.label for job in jobs if job.job_id not in done} - set(loras))
    if without:
        raise ValueError(f"No LoRA for the classes {without}; train them first (train_class_loras).")
    if any(job.source_index is not None for job in jobs):
        raise ValueError("Class LoRAs draw text-to-image images; these jobs are image-to-image.")
    written = 0
    for name in dict.fromkeys(job.label for job in jobs):
        mine = [job for job in jobs if job.label == name]
        if all(job.job_id in done for job in mine):
            continue
        clone = with_class_lora(generator, loras[name])
        written += generate_dataset(clone, mine, output, class_names, settings, shard_size=shard_size,
                                    lora=str(loras[name]), batch_size=batch_size)
        del clone
    return written


def _class_lora_card(generator: Generator, name: str, images: int, config: ClassLoRAConfig):
    from huggingface_hub import ModelCard, ModelCardData

    from ..cards import model_license

    template = ("---\n{{ card_data }}\n---\n# {{ title }}\n\nA LoRA (rank {{ rank }}) for `{{ base }}` learnt from "
                "{{ images }} real images of **{{ name }}** ({{ steps }} steps, lr {{ lr }}), as CytoDiff adapts a "
                "diffusion model per class.\n\n"
                "> **Research model, not a medical device.** Its images are synthetic.\n\n"
                "Load: `pipe.load_lora_weights(FOLDER_OR_REPO)` on "
                "`StableDiffusionPipeline.from_pretrained(\"{{ base }}\")`, then prompt for {{ name }}.\n")
    return ModelCard.from_template(
        ModelCardData(license=model_license(generator.model_id), library_name="diffusers",
                      base_model=generator.model_id or None, tags=["lora", "diffusers", "magic-suite", "cytodiff"]),
        template_str=template, title=f"{Path(generator.model_id).name or 'generator'} {name} LoRA",
        base=generator.model_id, name=name, images=images, rank=config.rank, steps=config.steps, lr=config.lr)

