"""Train a narrative classifier with Chain of Options (or plain fine-tuning) on the narrative dataset."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..precision import autocast_enabled
from .model import NarrativeClassifier
from .options import Example, make_examples


@dataclass
class NarrativeTrainConfig:
    """Training settings (CPU-sized defaults)."""

    base: str = field(default="minilm", metadata={"help": "minilm or smollm2 (both from their PyPI packages)."})
    method: str = field(default="coo", metadata={"help": "coo (Chain of Options steps + final) or plain (final only)."})
    epochs: int = field(default=2, metadata={"help": "Passes over the narratives."})
    batch_size: int = field(default=16, metadata={"help": "Examples per optimiser step."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (LoRA and head)."})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_layers: int = field(default=0, metadata={"help": "LoRA on the last N transformer layers only (0: all)."})
    steps: int = field(default=2, metadata={"help": "CoO intermediate steps per narrative (0: one per option)."})
    max_length: int = field(default=128, metadata={"help": "Tokens per input (narrative truncated first)."})
    max_narratives: int = field(default=0, metadata={"help": "Use only this many training narratives (0: all)."})
    seed: int = field(default=0, metadata={"help": "Seeds the head, the option sets and the order."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})
    validate: bool = field(default=True, metadata={"help": "Pick the best epoch on the validation split."})
    mixed_precision: bool = field(default=True, metadata={
        "help": "bfloat16 autocast for training (on GPU, and on CPUs with native bfloat16, where it is about 2.5x "
                "faster); evaluation and saved weights stay float32 / float16."})


def example_loss(classifier: NarrativeClassifier, batch: list[Example]) -> torch.Tensor:
    """Mean loss of a mixed batch: masked cross-entropy for final steps, BCE on the option's logit for steps."""
    logits = classifier([e.narrative for e in batch], [e.question for e in batch])  # (B, C)
    losses = []
    for row, example in zip(logits, batch):
        if example.kind == "final":
            options = list(example.options)
            losses.append(F.cross_entropy(row[options][None], torch.tensor([example.target], device=row.device)))
        else:
            target = torch.tensor(float(example.target), device=row.device)
            losses.append(F.binary_cross_entropy_with_logits(row[example.options[0]], target))
    return torch.stack(losses).mean()


def accuracy(classifier: NarrativeClassifier, texts: list[str], labels: list[int]) -> float:
    probabilities = classifier.predict_proba(texts)
    return float((probabilities.argmax(1) == np.asarray(labels)).mean()) if len(labels) else float("nan")


def train_narrative_classifier(config: NarrativeTrainConfig, train, validation=None,
                               log: Callable[[dict], None] | None = None) -> NarrativeClassifier:
    """Train on a ``datasets.Dataset`` with ``text`` and ``label``; keep the epoch best on validation accuracy."""
    if config.threads:
        torch.set_num_threads(config.threads)
    classifier = NarrativeClassifier.create(config.base, lora_rank=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                            max_length=config.max_length, seed=config.seed,
                                            lora_layers=config.lora_layers)
    texts, labels = list(train["text"]), list(train["label"])
    if config.max_narratives:
        keep = np.random.default_rng(config.seed).permutation(len(texts))[:config.max_narratives]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01)
    rng = np.random.default_rng(config.seed)
    epoch_examples = [[e for t, y in zip(texts, labels) for e in make_examples(t, y, rng, config.method, config.steps)]
                      for _ in range(config.epochs)]
    total = sum(-(-len(examples) // config.batch_size) for examples in epoch_examples)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=max(total, 1),
                                                    pct_start=max(0.1, 2.5 / max(total, 3)))
    device = classifier.device
    use_amp = autocast_enabled(device, config.mixed_precision)
    best, best_state, start, step = -1.0, None, time.time(), 0
    for epoch, examples in enumerate(epoch_examples):
        classifier.model.train()
        order = rng.permutation(len(examples))
        running = []
        for index in range(0, len(order), config.batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = example_loss(classifier, [examples[i] for i in order[index:index + config.batch_size]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            running.append(loss.item())
            step += 1
            if log and step % 20 == 0:
                log({"epoch": epoch, "step": step, "of": total, "loss": float(np.mean(running[-20:])),
                     "seconds": round(time.time() - start, 1)})
        record = {"epoch": epoch, "train_loss": float(np.mean(running)), "seconds": round(time.time() - start, 1)}
        if validation is not None and config.validate:
            record["val_accuracy"] = accuracy(classifier, list(validation["text"]), list(validation["label"]))
            if record["val_accuracy"] > best:
                best = record["val_accuracy"]
                best_state = {k: v.clone() for k, v in classifier.trained_state().items()}
        if log:
            log(record)
    if best_state is not None:
        with torch.no_grad():
            for name, param in classifier.model.named_parameters():
                if name in best_state:
                    param.copy_(best_state[name])
    classifier.info.update({"train": asdict(config), "train_seconds": round(time.time() - start, 1),
                            "train_narratives": len(texts), "val_accuracy": best if best >= 0 else None,
                            "bf16_autocast": use_amp})
    return classifier.eval()
