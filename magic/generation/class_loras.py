"""CytoDiff's adaptation: one LoRA per class, each learnt from k real images of that class, then used to draw that
class's synthetic images.

Every LoRA is trained on a private clone of the generator (the base stays untouched) and saved in diffusers'
format under ``OUTPUT/CLASS`` with a card, so it loads with ``pipe.load_lora_weights`` anywhere. A finished class
is skipped on a rerun; sampling with the LoRAs goes through ``generate_dataset``, so it resumes the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from ..hub import CLASS_LORAS_INDEX, LORA_WEIGHTS
from .adapters import export_lora, load_lora, save_lora
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
        if not (folder / LORA_WEIGHTS).is_file():  # written last: the mark of a finished class
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
    write_class_loras_index(output, generator.model_id, prompt_template)
    return folders


def finished_classes(folder: str | os.PathLike) -> list[str]:
    """The classes with a finished LoRA (``folder/CLASS/pytorch_lora_weights.safetensors``), sorted; none when
    ``folder`` is not a folder."""
    folder = Path(folder)
    return sorted(path.name for path in folder.iterdir() if (path / LORA_WEIGHTS).is_file()) if folder.is_dir() else []


def write_class_loras_index(folder: str | os.PathLike, base_model: str, prompt_template: str) -> Path:
    """Write ``CLASS_LORAS_INDEX`` and a card for every finished class LoRA under ``folder``; returns the index."""
    folder = Path(folder)
    classes = finished_classes(folder)
    learnt = {name: json.loads((folder / name / LORA_SETTINGS).read_text()) if (folder / name / LORA_SETTINGS).is_file()
              else {} for name in classes}
    index = folder / CLASS_LORAS_INDEX
    index.write_text(json.dumps({"base_model": base_model, "prompt_template": prompt_template, "classes": classes,
                                 "real_images": {name: learnt[name].get("real_images") for name in classes}},
                                indent=1) + "\n")
    _collection_card(base_model, classes, learnt).save(folder / "README.md")
    return index


def export_class_loras(source: str | os.PathLike, destination: str | os.PathLike,
                       dtype: torch.dtype | None = torch.float16) -> Path:
    """Copy a folder of class LoRAs (as ``train_class_loras`` writes it) with every LoRA's weights cast to
    ``dtype`` (e.g. to embed it in weights/), with their settings, cards and index (and the source's own card,
    else a new one)."""
    source, destination = Path(source), Path(destination)
    classes = finished_classes(source)
    if not classes:
        raise FileNotFoundError(f"{source} holds no class LoRA (CLASS/{LORA_WEIGHTS}): not a train-class-loras "
                                "output.")
    settings = json.loads((source / CLASS_LORAS_INDEX).read_text()) if (source / CLASS_LORAS_INDEX).is_file() else {}
    for name in classes:
        export_lora(source / name, destination / name, dtype=dtype)
        if (source / name / LORA_SETTINGS).is_file():
            shutil.copy(source / name / LORA_SETTINGS, destination / name / LORA_SETTINGS)
            settings = settings or json.loads((source / name / LORA_SETTINGS).read_text())
    write_class_loras_index(destination, settings.get("base_model", ""), settings.get("prompt_template", ""))
    if (source / "README.md").is_file():  # keep a card written for the source (e.g. with its measurements)
        shutil.copy(source / "README.md", destination / "README.md")
    return destination


def find_class_loras(folder: str | os.PathLike, classes: Sequence[str]) -> dict[str, Path]:
    """The finished LoRA folders ``folder/CLASS`` (as ``train_class_loras`` writes them) of those ``classes`` that
    have one; ``folder`` may also be an embedded id (``magic-suite/wbc-generator-class-loras``) or a Hub repo id.
    Raises when it is none of these or holds none of the classes."""
    from ..hub import ModelNotFoundError, resolve_model

    try:
        folder = resolve_model(folder)
    except ModelNotFoundError as error:
        raise FileNotFoundError(f"{folder} is not a folder of class LoRAs (FOLDER/CLASS, as train-class-loras "
                                f"writes them), an embedded one or a Hub repo id ({error}).") from None
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
    lora: str = "",
    replace_loaded: bool = False,
) -> int:
    """Run text-to-image ``jobs``: a class with a LoRA in ``loras`` is drawn with it loaded on a clone (on top of
    any LoRA ``generator`` has, or with ``replace_loaded`` instead of it), every other class by ``generator``
    itself; returns the images written. Resumable (and batched) like ``generate_dataset``. Each row's ``lora``
    column names what drew it: ``lora`` (the name of the LoRA ``generator`` has loaded, if any), the class's
    LoRA folder, or both joined by `` + ``."""
    if any(job.source_index is not None for job in jobs):
        raise ValueError("Class LoRAs draw text-to-image images; these jobs are image-to-image.")
    unknown = sorted(set(loras) - set(class_names))
    if unknown:
        raise ValueError(f"The class LoRAs {unknown} are not among the classes {class_names}.")
    done = completed_jobs(output)
    written = 0
    for name in dict.fromkeys(job.label for job in jobs):
        mine = [job for job in jobs if job.label == name]
        if all(job.job_id in done for job in mine):
            continue
        if name not in loras:
            written += generate_dataset(generator, mine, output, class_names, settings, shard_size=shard_size,
                                        lora=lora, batch_size=batch_size)
            continue
        clone = with_class_lora(generator, loras[name], replace_loaded)
        drew = " + ".join(part for part in ("" if replace_loaded else lora, str(loras[name])) if part)
        written += generate_dataset(clone, mine, output, class_names, settings, shard_size=shard_size, lora=drew,
                                    batch_size=batch_size)
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


def _collection_card(base_model: str, classes: list[str], learnt: dict[str, dict]):
    from huggingface_hub import ModelCard, ModelCardData

    from ..cards import model_license

    rows = "\n".join(f"| {name} | {learnt[name].get('real_images', '?')} | {learnt[name].get('rank', '?')} | "
                     f"{learnt[name].get('steps', '?')} |" for name in classes)
    template = ("---\n{{ card_data }}\n---\n# {{ title }}\n\nOne LoRA per class for `{{ base }}`, each learnt from "
                "real images of its class, as CytoDiff adapts a diffusion model per class; a class without one is "
                "drawn by the base model.\n\n"
                "> **Research model, not a medical device.** Its images are synthetic.\n\n"
                "| class | real images | rank | steps |\n|---|---|---|---|\n{{ rows }}\n\n"
                "Load one: `pipe.load_lora_weights(FOLDER_OR_REPO, subfolder=CLASS)` (with huggingface_hub, or "
                "`pipe.load_lora_weights(FOLDER/CLASS)`), then prompt for that class; or draw a dataset with "
                "`python -m magic generate-dataset --model {{ base }} --class-loras FOLDER_OR_REPO`.\n")
    return ModelCard.from_template(
        ModelCardData(license=model_license(base_model), library_name="diffusers", base_model=base_model or None,
                      tags=["lora", "diffusers", "magic-suite", "cytodiff"]),
        template_str=template, title=f"{Path(base_model).name or 'generator'} class LoRAs", base=base_model,
        rows=rows)
