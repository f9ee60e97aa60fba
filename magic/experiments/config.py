"""Declared augmentation experiments: the YAML schema, loading with loud errors, and the planned runs."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..classifiers.train import TrainConfig
from ..data.transforms import AugmentConfig
from ..generation.class_loras import ClassLoRAConfig
from ..generation.filtering import FilterConfig


class ConfigError(ValueError):
    """An experiment config has unknown keys, missing values or contradictory settings."""


def _strong_augment() -> AugmentConfig:
    return AugmentConfig(scale=(0.25, 1.0), hflip=0.5, vflip=0.5, color_jitter=0.4, re_prob=0.25)


@dataclass
class ClassifierSpec:
    """One classifier setting the experiment trains for every condition; ``train`` holds TrainConfig's fields."""

    name: str = field(metadata={"help": "Short name used in run ids and the report (e.g. resnet18-scratch)."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={
        "help": "Every other key of the YAML entry, passed to magic.classifiers.train.TrainConfig (architecture, "
                "pretrained, image_size, epochs, max_steps, batch_size, lr, balance, augment, num_workers, device, "
                "...). The harness defaults fit_ood to false: the out-of-distribution detector plays no part here."})


TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"
CLASS_LORA = "per-class-lora"
MODES = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, CLASS_LORA)


@dataclass
class SyntheticSource:
    """Where synthetic images come from: a generated dataset folder, or a generator run once and cached."""

    name: str = field(metadata={"help": "Short name used in run ids and the report (e.g. untuned, dpo)."})
    dataset: str = field(default="", metadata={
        "help": "A generated dataset (folder or Hub id, as written by `python -m magic generate-dataset`) with the "
                "real data's class names. Give this or generator, not both."})
    split: str = field(default="train", metadata={"help": "Split of `dataset` to read."})
    generator: str = field(default="", metadata={
        "help": "A generator (pipeline folder, embedded id or Hub id) to sample from; its images are cached under "
                "OUTPUT/synthetic/NAME so reruns do not regenerate."})
    lora: str = field(default="", metadata={
        "help": "A LoRA folder or id (e.g. magic-suite/wbc-generator-feedback-lora) to load into the generator first "
                "(optional)."})
    mode: str = field(default="text-to-image", metadata={
        "help": "text-to-image (class prompts); image-to-image: MAGIC's translation of the run's own real "
                "training images toward another class (target != source), generated per seed; or per-class-lora: "
                "CytoDiff's one LoRA per class learnt from `class_lora.shots` of the run's own real images of that "
                "class, then text-to-image with it, per seed."})
    class_loras: str = field(default="", metadata={
        "help": "text-to-image only: a folder or id of per-class LoRAs (as train-class-loras writes them; e.g. "
                "magic-suite/wbc-generator-class-loras): a class that has one is drawn with it, on top of `lora`; "
                "the other classes by the generator (with `lora`)."})
    class_loras_replace: bool = field(default=False, metadata={
        "help": "With class_loras and lora: draw a class that has its own LoRA without `lora`."})
    class_lora: ClassLoRAConfig = field(default_factory=ClassLoRAConfig, metadata={
        "help": "per-class-lora only: how each class's LoRA is learnt (shots, rank, steps, batch_size, lr, seed)."})
    strength: float = field(default=0.6, metadata={
        "help": "Image-to-image only: how far from the source image (0-1; higher keeps less of it)."})
    prompt_template: str = field(default="", metadata={
        "help": "Prompt with {name}; empty: the generator's own (magic_generator.json)."})
    steps: int = field(default=25, metadata={"help": "Denoising steps."})
    guidance: float = field(default=5.0, metadata={"help": "Classifier-free guidance scale."})
    seed: int = field(default=0, metadata={
        "help": "Base seed; image i of class c uses seed + 1000003 * c + i (as generate-dataset does)."})
    device: str = field(default="auto", metadata={"help": "Generation device: auto, cpu, cuda or cuda:N."})
    batch_size: int = field(default=1, metadata={
        "help": "Images per pipeline call (8-32 is several times faster than 1). Batched images equal the "
                "one-at-a-time images of their seeds up to rounding, so a cache records a batch size above 1."})
    real_augment: AugmentConfig | None = field(default=None, metadata={
        "help": "Augmentation of the real images of this source's runs (AugmentConfig fields, e.g. the "
                "classic-augmentation control's), in place of the classifier's own `augment`, which the added "
                "images keep; null: the classifier's own for both. Not a generation setting: a source that differs "
                "from its twin only here reuses the twin's images."})
    filter: FilterConfig = field(default_factory=FilterConfig, metadata={
        "help": "A judge that drops generated images it does not accept (FilterConfig fields: a `classifier` "
                "trained on real images with `min_confidence`, or an `evaluator` with `catalog` and `min_score`). "
                "The per-class counts are images generated; the rejected ones are left out of training. Sources "
                "with the same generation settings share one image cache, so a filtered source and its unfiltered "
                "twin compare the same images."})
    synthetic_per_class: list[int] = field(default_factory=list, metadata={
        "help": "Counts per class this source is swept over, when not the experiment's `synthetic_per_class` "
                "(e.g. fewer for a source that is slow to generate); empty: the experiment's."})

    def __post_init__(self):
        if any(not isinstance(n, int) or n < 1 for n in self.synthetic_per_class):
            raise ConfigError(f"Synthetic source {self.name!r}: synthetic_per_class must hold counts >= 1, got "
                              f"{self.synthetic_per_class}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"Synthetic source {self.name!r}: batch_size must be an integer >= 1, got "
                              f"{self.batch_size!r}.")
        if bool(self.dataset) == bool(self.generator):
            raise ConfigError(f"Synthetic source {self.name!r}: give exactly one of `dataset` (a generated dataset "
                              "folder or Hub id) or `generator` (a pipeline to sample from).")
        if self.mode not in MODES:
            raise ConfigError(f"Synthetic source {self.name!r}: mode {self.mode!r} is not supported; use one of "
                              f"{', '.join(MODES)}.")
        if self.per_seed and not self.generator:
            raise ConfigError(f"Synthetic source {self.name!r}: {self.mode} needs `generator` (the images are made "
                              "from each seed's real training set).")
        if not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"Synthetic source {self.name!r}: strength must be in (0, 1], got {self.strength}.")
        if self.lora and self.mode == CLASS_LORA:
            raise ConfigError(f"Synthetic source {self.name!r}: per-class-lora learns its own LoRAs; drop `lora`.")
        if self.lora and not self.generator:
            raise ConfigError(f"Synthetic source {self.name!r}: `lora` needs `generator`.")
        if self.class_loras and (self.mode != TEXT_TO_IMAGE or not self.generator):
            raise ConfigError(f"Synthetic source {self.name!r}: class_loras draws text-to-image images with "
                              "`generator`; set mode: text-to-image (per-class-lora learns its own).")
        if self.class_loras_replace and not (self.class_loras and self.lora):
            raise ConfigError(f"Synthetic source {self.name!r}: class_loras_replace replaces `lora` by each class's "
                              "own LoRA: give both class_loras and lora.")
        if self.prompt_template and "{name}" not in self.prompt_template:
            raise ConfigError(f"Synthetic source {self.name!r}: prompt_template must contain {{name}}.")

    @property
    def per_seed(self) -> bool:
        """Whether the images come from each seed's own real training set (so are made, and cached, per seed)."""
        return self.mode in (IMAGE_TO_IMAGE, CLASS_LORA)

    def cache_key(self) -> dict[str, Any]:
        """The settings that decide the generated images (the per-class count is not one: caches grow)."""
        keys = ("generator", "lora", "mode", "prompt_template", "steps", "guidance", "seed")
        return {key: getattr(self, key) for key in keys} | (
            {"strength": self.strength} if self.mode == IMAGE_TO_IMAGE else {}) | (
            {"class_lora": self.class_lora.to_dict()} if self.mode == CLASS_LORA else {}) | (
            {"class_loras": self.class_loras, "class_loras_replace": self.class_loras_replace}
            if self.class_loras else {}) | (
            {"batch_size": self.batch_size} if self.batch_size > 1 else {})


@dataclass
class Controls:
    """The controls a reviewer asks for, so that a gain can be attributed to the synthetic images."""

    extra_real: bool = field(default=True, metadata={
        "help": "Add the same number of extra REAL images per class (from the rest of the real train split, capped "
                "by what is there), mixed at the same share: the upper bound of perfect synthetic images."})
    classic_augmentation: bool = field(default=True, metadata={
        "help": "Real images only, with the stronger classic augmentation below."})
    classic_augment: AugmentConfig = field(default_factory=_strong_augment, metadata={
        "help": "Augmentation of the classic-augmentation control (AugmentConfig fields)."})


@dataclass
class FastMode:
    """Caps applied by ``--fast`` (smoke checks); every planned run still runs."""

    max_steps: int = field(default=4, metadata={"help": "Classifier optimiser steps per run."})
    generation_steps: int = field(default=2, metadata={"help": "Denoising steps of generated images."})
    max_synthetic_per_class: int = field(default=4, metadata={"help": "Cap on each synthetic_per_class value."})
    max_seeds: int = field(default=2, metadata={"help": "Seeds kept (the first ones)."})
    max_lora_steps: int = field(default=2, metadata={"help": "Optimiser steps of each per-class LoRA."})


@dataclass
class AugmentExperimentConfig:
    """An augmentation experiment: real-only baseline vs real + synthetic vs controls, over seeds."""

    name: str = field(metadata={"help": "Experiment name (report title)."})
    real_data: str = field(metadata={
        "help": "Real dataset: folder or Hub id loadable by magic.data.load_image_dataset. Relative paths are "
                "relative to the working directory (run from the project root)."})
    description: str = field(default="", metadata={"help": "One paragraph for the report."})
    train_split: str = field(default="train", metadata={"help": "Split the real training set is drawn from."})
    val_split: str = field(default="validation", metadata={
        "help": "Real split for model selection and calibration (never synthetic)."})
    test_split: str = field(default="test", metadata={"help": "Real split every metric is reported on."})
    imbalanced: str | dict[str, float] = field(default="", metadata={
        "help": "Imbalance profile of the real training set: a name (e.g. matek19, see magic.data.subsets) or a "
                "mapping of class name to proportion, scaled to `total`; empty: none."})
    k_shot: int = field(default=0, metadata={"help": "Real training set of K images per class (0: off)."})
    total: int = field(default=500, metadata={"help": "Images in the imbalanced real training set."})
    min_per_class: int = field(default=5, metadata={"help": "Minimum images per class in the imbalanced set."})
    synthetic_per_class: list[int] = field(default_factory=lambda: [0, 100, 1000], metadata={
        "help": "Synthetic (or extra real) images added per class, swept; 0 is the real-only baseline."})
    synthetic_share: list[float | None] = field(default_factory=lambda: [0.2], metadata={
        "help": "rho, the expected share of each training batch drawn from the added images, swept; null pools "
                "the images and lets the classifier's `balance` sample them like real ones."})
    balance_within_parts: bool = field(default=True, metadata={
        "help": "Within the real part and the added part, rebalance classes as the classifier's `balance` says "
                "(sampler: equal classes, sqrt-sampler: 1/sqrt(count)); false: uniform within each part."})
    equal_steps: bool = field(default=True, metadata={
        "help": "Give every condition the optimiser steps of the real-only run (epochs over the real set), so "
                "added images change what is seen, not how long the classifier trains."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Seeds; each draws its own real subset, extra real images and classifier initialisation."})
    classifiers: list[ClassifierSpec] = field(default_factory=list, metadata={
        "help": "Classifier settings, each trained on every condition (a list of TrainConfig entries with a name)."})
    synthetic_sources: list[SyntheticSource] = field(default_factory=list, metadata={
        "help": "Named synthetic sources; the untuned generator is simply one of them."})
    controls: Controls = field(default_factory=Controls, metadata={"help": "Control conditions."})
    fast: FastMode = field(default_factory=FastMode, metadata={"help": "Caps applied with --fast."})

    def __post_init__(self):
        if self.imbalanced and self.k_shot:
            raise ConfigError("Give either `imbalanced` (a profile name) or `k_shot`, not both.")
        if not self.seeds:
            raise ConfigError("`seeds` needs at least one seed.")
        if not self.classifiers:
            raise ConfigError("`classifiers` needs at least one entry (name + TrainConfig fields).")
        if any(n < 0 for n in self.synthetic_per_class):
            raise ConfigError(f"synthetic_per_class must be >= 0, got {self.synthetic_per_class}.")
        for share in self.synthetic_share:
            if share is not None and not 0.0 < float(share) < 1.0:
                raise ConfigError(f"synthetic_share values must lie in (0, 1) or be null, got {share}.")
        for kind, items in (("classifier", self.classifiers), ("synthetic source", self.synthetic_sources)):
            names = [item.name for item in items]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ConfigError(f"Duplicate {kind} names {duplicates}; names must be unique.")
            bad = [name for name in names if not name or "__" in name or "/" in name]
            if bad:
                raise ConfigError(f"{kind} names {bad} must be non-empty, without '/' or '__'.")

    def image_folder(self, source: SyntheticSource) -> str:
        """The name of the OUTPUT/synthetic/ folder ``source``'s generated images are cached in: that of the first
        source with the same generation settings (so a filtered source reuses its unfiltered twin's images)."""
        if not source.generator:
            return source.name
        return next(other.name for other in self.synthetic_sources
                    if other.generator and other.cache_key() == source.cache_key())

    def with_fast_caps(self) -> AugmentExperimentConfig:
        """A copy shrunk by ``fast``: fewer seeds, steps and images (same conditions)."""
        caps = self.fast
        counts = sorted({min(n, caps.max_synthetic_per_class) for n in self.synthetic_per_class})
        classifiers = [ClassifierSpec(spec.name, dataclasses.replace(
            spec.train, max_steps=min(spec.train.max_steps or caps.max_steps, caps.max_steps), eval_every=1))
            for spec in self.classifiers]
        sources = [dataclasses.replace(
            source, steps=min(source.steps, caps.generation_steps),
            synthetic_per_class=sorted({min(n, caps.max_synthetic_per_class) for n in source.synthetic_per_class}),
            class_lora=dataclasses.replace(source.class_lora, steps=min(source.class_lora.steps, caps.max_lora_steps)))
            for source in self.synthetic_sources]
        return dataclasses.replace(self, synthetic_per_class=counts, seeds=self.seeds[: caps.max_seeds],
                                   classifiers=classifiers, synthetic_sources=sources)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["classifiers"] = [{"name": spec.name, **dataclasses.asdict(spec.train)} for spec in self.classifiers]
        return values


# ---------------------------------------------------------------------------------------------- loading


def _check_keys(cls, values: Any, where: str, extra: tuple[str, ...] = ()) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}.")
    known = [item.name for item in dataclasses.fields(cls)] + list(extra)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; known keys: {', '.join(sorted(known))}.")
    return dict(values)


def _build(cls, values: Any, where: str):
    values = _check_keys(cls, values, where)
    required = [item.name for item in dataclasses.fields(cls)
                if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise ConfigError(f"Missing key(s) {missing} in {where}.")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def _augment(values: Any, where: str) -> AugmentConfig:
    values = _check_keys(AugmentConfig, values, where)
    if "scale" in values:
        values["scale"] = tuple(values["scale"])
    return _build(AugmentConfig, values, where)


def _classifier(values: Any, where: str) -> ClassifierSpec:
    values = _check_keys(TrainConfig, values, where, extra=("name",))
    if "name" not in values:
        raise ConfigError(f"Missing key ['name'] in {where}.")
    name = str(values.pop("name"))
    if "augment" in values:
        values["augment"] = _augment(values["augment"], f"{where}.augment")
    values.setdefault("fit_ood", False)
    return ClassifierSpec(name=name, train=_build(TrainConfig, values, where))


def _synthetic_source(values: Any, where: str) -> SyntheticSource:
    values = _check_keys(SyntheticSource, values, where)
    if "class_lora" in values:
        values["class_lora"] = _build(ClassLoRAConfig, values["class_lora"] or {}, f"{where}.class_lora")
    if "filter" in values:
        values["filter"] = _build(FilterConfig, values["filter"] or {}, f"{where}.filter")
    if values.get("real_augment") is not None:
        values["real_augment"] = _augment(values["real_augment"], f"{where}.real_augment")
    return _build(SyntheticSource, values, where)


def config_from_dict(values: Any, source: str = "experiment config") -> AugmentExperimentConfig:
    """Build a config from plain data (parsed YAML), raising ConfigError for unknown or missing keys."""
    values = _check_keys(AugmentExperimentConfig, values, source, extra=("classifier",))
    if "classifier" in values:  # one classifier, unnamed: a convenience for `classifiers: [{name: NAME, ...}]`
        if "classifiers" in values:
            raise ConfigError(f"{source}: give `classifier` or `classifiers`, not both.")
        single = dict(values.pop("classifier") or {})
        single.setdefault("name", single.get("architecture", "classifier"))
        values["classifiers"] = [single]
    values["classifiers"] = [_classifier(item, f"{source}: classifiers[{index}]")
                             for index, item in enumerate(values.get("classifiers") or [])]
    values["synthetic_sources"] = [_synthetic_source(item, f"{source}: synthetic_sources[{index}]")
                                   for index, item in enumerate(values.get("synthetic_sources") or [])]
    if "controls" in values:
        controls = _check_keys(Controls, values["controls"] or {}, f"{source}: controls")
        if "classic_augment" in controls:
            controls["classic_augment"] = _augment(controls["classic_augment"], f"{source}: controls.classic_augment")
        values["controls"] = _build(Controls, controls, f"{source}: controls")
    if "fast" in values:
        values["fast"] = _build(FastMode, values["fast"] or {}, f"{source}: fast")
    for key in ("synthetic_per_class", "synthetic_share", "seeds"):
        if key in values and not isinstance(values[key], list):
            values[key] = [values[key]]
    return _build(AugmentExperimentConfig, values, source)


def load_config(path: str | os.PathLike) -> AugmentExperimentConfig:
    """Read an experiment config from a YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No experiment config at {path}; see configs/experiments/ for examples.")
    return config_from_dict(yaml.safe_load(path.read_text()) or {}, source=str(path))


# ---------------------------------------------------------------------------------------------- the plan

REAL_ONLY = "real-only"
SYNTHETIC = "synthetic"
EXTRA_REAL = "extra-real"
CLASSIC = "classic-augmentation"


@dataclass(frozen=True)
class RunSpec:
    """One planned training run: a classifier on one condition with one seed."""

    classifier: str
    kind: str  # REAL_ONLY, SYNTHETIC, EXTRA_REAL or CLASSIC
    source: str  # synthetic source name ("" unless kind is SYNTHETIC)
    per_class: int  # images added per class (0 for real-only and classic augmentation)
    share: float | None  # rho; None: pooled
    seed: int

    @property
    def condition(self) -> str:
        """The condition's name in the report: real-only, +SOURCE, +extra-real or classic-augmentation."""
        return f"+{self.source}" if self.kind == SYNTHETIC else ("+extra-real" if self.kind == EXTRA_REAL
                                                                  else self.kind)

    @property
    def run_id(self) -> str:
        share = "pool" if self.share is None else f"{self.share:g}"
        added = f"__n{self.per_class}__rho{share}" if self.kind in (SYNTHETIC, EXTRA_REAL) else ""
        return f"{self.classifier}__{self.condition.lstrip('+')}{added}__seed{self.seed}"

    def group(self) -> tuple:
        """Runs that differ only by seed share a group."""
        return (self.classifier, self.kind, self.source, self.per_class, self.share)


def plan_runs(config: AugmentExperimentConfig) -> list[RunSpec]:
    """Every run the experiment makes, in order: per classifier and seed, the baseline, each source x count x
    share, the extra-real control x count x share, then classic augmentation."""
    counts = sorted({n for n in config.synthetic_per_class if n > 0})
    shares = list(dict.fromkeys(config.synthetic_share))
    runs = []
    for spec in config.classifiers:
        for seed in config.seeds:
            runs.append(RunSpec(spec.name, REAL_ONLY, "", 0, None, seed))
            for source in config.synthetic_sources:
                own = sorted(set(source.synthetic_per_class)) or counts
                runs += [RunSpec(spec.name, SYNTHETIC, source.name, n, share, seed) for n in own for share in shares]
            if config.controls.extra_real:
                runs += [RunSpec(spec.name, EXTRA_REAL, "", n, share, seed) for n in counts for share in shares]
            if config.controls.classic_augmentation:
                runs.append(RunSpec(spec.name, CLASSIC, "", 0, None, seed))
    return runs
