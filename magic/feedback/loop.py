"""MAGIC's feedback loop: generate -> evaluate against the checklist -> preference pairs -> fine-tune, in rounds.

Every round is measured on the same fixed seeds (so rounds differ only by the weights), by the evaluator being
optimised **and** by held-out judges it never trains against: a classifier (does it still look like the requested
class?) and optionally a second evaluator. A loop that only pleased its own evaluator would show up as a rising
evaluator score with a flat or falling held-out figure.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..catalog import catalog_for_labels, load_catalog
from ..classifiers.model import ImageClassifier
from ..evaluation.base import Evaluator
from ..evaluation.preferences import BOTH_LOSE, BOTH_WIN, make_pairs, save_preferences
from ..evaluation.verdict import Checklist, Verdict
from ..generation.adapters import save_lora
from ..generation.generator import GenerationSettings, Generator
from .tuning import Example, FeedbackTrainConfig, train_on_feedback

TRAIN_SEED_OFFSET = 1_000_000  # training samples never reuse the measurement seeds


@dataclass
class FeedbackLoopConfig:
    """Settings of a feedback loop."""

    catalog: str = field(default="", metadata={
        "help": "Condition catalog whose checklists judge the images (a shipped name or a YAML path; default: the "
                "shipped catalog that names every class of the generator, e.g. ham10000 for a skin-lesion one)."})
    conditions: list[str] = field(default_factory=list, metadata={
        "help": "Conditions to improve (default: every class the generator was trained on)."})
    rounds: int = field(default=3, metadata={"help": "Fine-tuning rounds (round 0 is the untouched generator)."})
    samples_per_condition: int = field(default=16, metadata={
        "help": "Images generated, judged and paired per condition in each round (even)."})
    eval_per_condition: int = field(default=32, metadata={
        "help": "Images per condition measured after each round, on the same seeds every round."})
    steps: int = field(default=25, metadata={"help": "Sampling steps."})
    guidance: float = field(default=5.0, metadata={"help": "Classifier-free guidance."})
    seed: int = field(default=0, metadata={"help": "First measurement seed; training samples use other seeds."})
    train: FeedbackTrainConfig = field(default_factory=FeedbackTrainConfig, metadata={
        "help": "How each round fine-tunes (DPO or RFT on a LoRA)."})

    def __post_init__(self):
        if self.rounds < 0 or self.samples_per_condition < 2 or self.eval_per_condition < 1:
            raise ValueError("rounds >= 0, samples_per_condition >= 2 and eval_per_condition >= 1 are required.")
        if self.samples_per_condition % 2:
            raise ValueError(f"samples_per_condition must be even (images are paired); got "
                             f"{self.samples_per_condition}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RoundReport:
    """What one round's weights produce on the fixed measurement seeds."""

    round: int
    evaluator_mean_score: float
    evaluator_share_at_least_3: float
    judge_accuracy: float | None = None
    judge_per_condition: dict[str, float] = field(default_factory=dict)
    heldout_mean_score: float | None = None
    heldout_share_at_least_3: float | None = None
    per_condition_score: dict[str, float] = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeedbackResult:
    """Per-round reports, and the last round's measurement images with their verdicts."""

    rounds: list[RoundReport]
    images: list[Image.Image]
    conditions: list[str]
    verdicts: list[Verdict]

    def to_dict(self) -> dict:
        return {"rounds": [report.to_dict() for report in self.rounds]}


def _settings(config: FeedbackLoopConfig, seed: int) -> GenerationSettings:
    return GenerationSettings(steps=config.steps, guidance=config.guidance, seed=seed)


def _sample(generator: Generator, conditions: Sequence[str], per_condition: int, config: FeedbackLoopConfig,
            seed: int) -> tuple[list[Image.Image], list[str]]:
    images, labels = [], []
    for condition in conditions:
        images += generator.text_to_image(generator.info.prompt(condition), _settings(config, seed), per_condition)
        labels += [condition] * per_condition
    return images, labels


def _measure(generator: Generator, evaluator: Evaluator, checklists: dict[str, Checklist],
             config: FeedbackLoopConfig, judge: ImageClassifier | None, heldout: Evaluator | None,
             round_index: int) -> tuple[RoundReport, list[Image.Image], list[str], list[Verdict]]:
    conditions = list(checklists)
    images, labels = _sample(generator, conditions, config.eval_per_condition, config, config.seed)
    verdicts = evaluator.evaluate_batch(images, [checklists[label] for label in labels])
    scores = np.array([verdict.score for verdict in verdicts])
    report = RoundReport(
        round=round_index, evaluator_mean_score=float(scores.mean()),
        evaluator_share_at_least_3=float((scores >= 3).mean()),
        per_condition_score={c: float(scores[[lab == c for lab in labels]].mean()) for c in conditions})
    if judge is not None:
        predicted = [prediction.labels[0] for prediction in judge.predict(images, top_k=1)]
        right = np.array([p == label for p, label in zip(predicted, labels)])
        report.judge_accuracy = float(right.mean())
        report.judge_per_condition = {c: float(right[[lab == c for lab in labels]].mean()) for c in conditions}
    if heldout is not None:
        held = np.array([v.score for v in heldout.evaluate_batch(images, [checklists[lab] for lab in labels])])
        report.heldout_mean_score, report.heldout_share_at_least_3 = float(held.mean()), float((held >= 3).mean())
    return report, images, labels, verdicts


def _lora_card(generator: Generator, evaluator: Evaluator, config: FeedbackLoopConfig,
               reports: list[RoundReport]):
    """The LoRA's model card: base model, licence (the generator's), method and the per-round figures."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..cards import model_license

    license_ = model_license(generator.model_id)
    rows = "\n".join(f"| {r.round} | {r.evaluator_mean_score:.2f} | {r.evaluator_share_at_least_3:.1%} | "
                     f"{'' if r.judge_accuracy is None else f'{r.judge_accuracy:.1%}'} |" for r in reports)
    template = ("---\n{{ card_data }}\n---\n# {{ title }}\n\nA LoRA for `{{ base }}` fine-tuned with MAGIC's "
                "evaluator feedback ({{ method }}, {{ rounds }} rounds, evaluator `{{ evaluator }}`, catalog "
                "`{{ catalog }}`).\n\n"
                "> **Research model, not a medical device.** Its images are synthetic.\n\n"
                "Load: `pipe.load_lora_weights(FOLDER_OR_REPO)` on "
                "`StableDiffusionPipeline.from_pretrained(\"{{ base }}\")`."
                "\n\n| round | mean checklist score | share >= 3 criteria | held-out judge |\n|---|---|---|---|\n"
                "{{ rows }}\n")
    return ModelCard.from_template(
        ModelCardData(license=license_, library_name="diffusers", base_model=generator.model_id or None,
                      tags=["lora", "diffusers", "magic-suite", "dpo" if config.train.method == "dpo" else "rft"]),
        template_str=template, title=f"{Path(generator.model_id).name or 'generator'} feedback LoRA",
        base=generator.model_id, method=config.train.method.upper(), rounds=config.rounds,
        evaluator=evaluator.backend_id, catalog=config.catalog, rows=rows)


def _same_weights(a: ImageClassifier, b: ImageClassifier) -> bool:
    if a is b:
        return True
    first, second = a.state_dict(), b.state_dict()
    return (a.architecture == b.architecture and first.keys() == second.keys()
            and all(first[k].shape == second[k].shape and torch.equal(first[k].cpu(), second[k].cpu())
                    for k in first))


def run_feedback_loop(
    generator: Generator,
    evaluator: Evaluator,
    config: FeedbackLoopConfig,
    judge: ImageClassifier | None = None,
    heldout: Evaluator | None = None,
    output: str | os.PathLike | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> FeedbackResult:
    """Run ``config.rounds`` rounds on ``generator`` (its LoRA is trained in place; pass ``generator.clone()`` to
    keep the original) and return the per-round reports. With ``output``, every round's images, preference pairs
    and LoRA (``roundK/lora``) are written there, ``report.json`` after every round (a stopped loop keeps what it
    measured), and the final LoRA as ``lora/``."""
    if generator.info is None:
        raise ValueError("The generator has no magic_generator.json (its classes and prompt form); the loop needs "
                         "them to prompt each condition.")
    conditions = config.conditions or list(generator.info.label_names)
    unknown = [c for c in conditions if c not in generator.info.label_names]
    if unknown:
        raise ValueError(f"The generator was not trained on {unknown}; it knows {generator.info.label_names}.")
    optimised = [m for m in getattr(evaluator, "classifiers", ()) if isinstance(m, ImageClassifier)]
    if judge is not None and any(_same_weights(member, judge) for member in optimised):
        raise ValueError("The judge is the classifier the loop optimises; the loop would only please its own judge. "
                         "Measure with another classifier (--judge), trained separately.")
    catalog = load_catalog(config.catalog) if config.catalog else catalog_for_labels(generator.info.label_names)
    if catalog is None:
        raise ValueError(f"No shipped catalog names every class of {generator.model_id or 'the generator'} "
                         f"({', '.join(generator.info.label_names)}); set the config's catalog (--catalog) to a "
                         "catalog YAML with a checklist per class.")
    if not config.catalog:  # the report and the LoRA's card name the catalog used
        config = replace(config, catalog=catalog.name)
    unnamed = [c for c in conditions if catalog.find(c) is None]
    if unnamed:
        raise ValueError(f"Catalog {catalog.name!r} has no checklist for {unnamed} (its conditions are "
                         f"{catalog.ids}); choose the catalog that names the generator's classes "
                         "(magic.catalog.catalog_for_labels).")
    checklists = {condition: Checklist.from_catalog(catalog, condition) for condition in conditions}
    folder = Path(output) if output is not None else None
    reports = []
    report, images, labels, verdicts = _measure(generator, evaluator, checklists, config, judge, heldout, 0)
    reports.append(report)
    if on_round is not None:
        on_round(report)
    for round_index in range(1, config.rounds + 1):
        seed = config.seed + TRAIN_SEED_OFFSET + round_index * config.samples_per_condition
        samples, sample_labels = _sample(generator, conditions, config.samples_per_condition, config, seed)
        judged = evaluator.evaluate_batch(samples, [checklists[label] for label in sample_labels])
        names = [f"round{round_index}/{label}-{i:04d}.png" for i, label in enumerate(sample_labels)]
        records = [{"image": name, "score": verdict.score, "group": label, "condition_id": label,
                    "prompt": generator.info.prompt(label)}
                   for name, verdict, label in zip(names, judged, sample_labels)]
        pairs = make_pairs(records, judge=evaluator.backend_id)
        by_name = dict(zip(names, samples))
        train = FeedbackTrainConfig(**{**config.train.to_dict(), "seed": config.train.seed + round_index})
        learnable = train.method == "rft" or any(pair.win_a != pair.win_b or pair.rule == BOTH_WIN for pair in pairs)
        if folder is not None:
            (folder / f"round{round_index}").mkdir(parents=True, exist_ok=True)
            for name, image in by_name.items():
                image.save(folder / name)
            save_preferences(pairs, folder / f"round{round_index}" / "preferences.json")
        per_condition = {c: dict(Counter(pair.rule for pair in pairs if pair.group == c)) for c in conditions}
        # DPO learns nothing about these: every pair lost (the evaluator credits none of them)
        without_signal = [c for c, rules in per_condition.items() if set(rules) <= {BOTH_LOSE}]
        history = []
        if learnable:  # a DPO round whose pairs all lose teaches nothing: the weights stay as they are
            history = train_on_feedback(
                generator.pipeline, train,
                pairs=[(pair, by_name[pair.a.image], by_name[pair.b.image]) for pair in pairs],
                examples=[Example(image, generator.info.prompt(label), verdict.score / len(verdict.scores))
                          for image, label, verdict in zip(samples, sample_labels, judged)],
                anchors=[Example(image, generator.info.prompt(label))
                         for image, label in zip(samples, sample_labels) if label in without_signal])
        report, images, labels, verdicts = _measure(generator, evaluator, checklists, config, judge, heldout,
                                                    round_index)
        report.training = {"method": train.method, "rules": dict(Counter(pair.rule for pair in pairs)),
                           "rules_per_condition": per_condition,
                           "conditions_without_signal": without_signal,
                           "anchored": without_signal if train.uses_anchors else [],
                           "sample_mean_score": float(np.mean([v.score for v in judged])),
                           "trained": learnable, "final_loss": history[-1]["loss"] if history else None,
                           "ranked_right": history[-1].get("ranked_right") if history else None}
        reports.append(report)
        if folder is not None:
            _write_outputs(folder, folder / f"round{round_index}" / "lora", generator, evaluator, config, reports)
        if on_round is not None:
            on_round(report)
    result = FeedbackResult(reports, images, labels, verdicts)
    if folder is not None:
        _write_outputs(folder, folder / "lora", generator, evaluator, config, reports)
    return result


def _write_outputs(folder: Path, lora_folder: Path, generator: Generator, evaluator: Evaluator,
                   config: FeedbackLoopConfig, reports: list[RoundReport]) -> None:
    """The LoRA as it is now (with its card) and the report of the rounds so far."""
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(generator.pipeline.unet, "peft_config", None):
        save_lora(generator.pipeline, lora_folder)
        _lora_card(generator, evaluator, config, reports).save(lora_folder / "README.md")
    report = {"config": config.to_dict(), "generator": generator.model_id, "evaluator": evaluator.backend_id,
              "rounds": [r.to_dict() for r in reports]}
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
