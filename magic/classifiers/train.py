"""Train an image classifier: AdamW, warmup + cosine schedule, augmentation, optional class balancing."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import datasets
import numpy as np
import torch
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from ..data.datasets import TorchImageDataset, class_names, labels_of
from ..data.subsets import balance_exponent
from ..data.transforms import AugmentConfig, train_transform
from .calibration import fit_temperature
from .evaluate import collect_logits, collect_outputs, metrics_from_logits
from .factory import DEFAULT_ARCHITECTURE, create_classifier
from .model import ImageClassifier
from .ood import fit_ood_detector

BALANCE_CHOICES = ("none", "sampler", "sqrt-sampler", "loss")


@dataclass
class TrainConfig:
    """Settings of one classifier training run."""

    architecture: str = field(default=DEFAULT_ARCHITECTURE, metadata={"help": "timm architecture name."})
    pretrained: bool = field(default=True, metadata={"help": "Start from packaged ImageNet weights if available."})
    image_size: int = field(default=128, metadata={"help": "Square input size in pixels."})
    epochs: float = field(default=10, metadata={"help": "Passes over the training set (fractions allowed)."})
    max_steps: int = field(default=0, metadata={"help": "Stop after this many optimiser steps (0: no limit)."})
    batch_size: int = field(default=64, metadata={"help": "Images per optimiser step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(default=0.02, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps before the cosine decay."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Cross-entropy label smoothing."})
    drop_rate: float = field(default=0.2, metadata={"help": "Dropout before the classifier head."})
    balance: str = field(default="none", metadata={
        "help": "Class balancing: none, sampler (class-balanced sampling), sqrt-sampler (sampling weight "
                "1/sqrt(class count): a milder rebalancing that keeps the majority class's accuracy) or loss "
                "(inverse-frequency loss weights)."})
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "Training augmentation."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    mixed_precision: bool = field(default=True, metadata={"help": "bfloat16 autocast on GPU (ignored on CPU)."})
    seed: int = field(default=0, metadata={"help": "Seed for weights, sampling and augmentation."})
    fit_ood: bool = field(default=True, metadata={
        "help": "Fit the out-of-distribution detector on training features (needs a validation split)."})
    eval_every: int = field(default=1, metadata={
        "help": "Validate every N epochs; the best-validation weights are kept."})

    def __post_init__(self):
        if self.balance not in BALANCE_CHOICES:
            raise ValueError(f"balance must be one of {BALANCE_CHOICES}, got {self.balance!r}.")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _class_counts(labels: list[int], num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)


def train_classifier(
    config: TrainConfig,
    train_dataset: datasets.Dataset,
    val_dataset: datasets.Dataset | None = None,
    log: Callable[[dict], None] | None = None,
    sample_weights: Sequence[float] | None = None,
    alternate_augment: AugmentConfig | None = None,
    alternate_rows: Sequence[bool] | None = None,
) -> ImageClassifier:
    """Train a new classifier on ``train_dataset`` and calibrate it on ``val_dataset`` when given.

    With a validation split, the weights of the epoch with the best validation macro-F1 are kept and a softmax
    temperature is fitted on validation logits. ``log`` receives one dict per epoch. ``sample_weights`` (one
    non-negative weight per training image) draws each epoch's ``len(train_dataset)`` images with replacement in
    proportion to the weights, in place of ``config.balance``'s sampler (a ``loss`` balance still applies).
    ``alternate_augment`` augments the rows where ``alternate_rows`` (one bool per training image) is true in place
    of ``config.augment`` (e.g. a stronger augmentation of the real images only, when generated ones are mixed in).
    """
    random.seed(config.seed)  # timm's crop/flip transforms draw from Python's random
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    names = class_names(train_dataset)
    classifier = create_classifier(config.architecture, names, pretrained=config.pretrained,
                                   image_size=config.image_size, drop_rate=config.drop_rate).to(device)
    labels = labels_of(train_dataset)
    counts = _class_counts(labels, len(names))
    if (alternate_augment is None) != (alternate_rows is None):
        raise ValueError("Give both alternate_augment and alternate_rows (one bool per training image), or neither.")
    alternate = train_transform(classifier.preprocess, alternate_augment) if alternate_augment is not None else None
    data = TorchImageDataset(train_dataset, train_transform(classifier.preprocess, config.augment), alternate,
                             alternate_rows)
    generator = torch.Generator().manual_seed(config.seed)
    if sample_weights is not None:
        draw = np.asarray(sample_weights, dtype=np.float64)
        if draw.shape != (len(labels),) or not np.isfinite(draw).all() or (draw < 0).any() or draw.sum() <= 0:
            raise ValueError(f"sample_weights needs one finite, non-negative weight per training image "
                             f"({len(labels)}), not all zero; got shape {draw.shape}.")
        sampler = torch.utils.data.WeightedRandomSampler(draw.tolist(), len(labels), replacement=True,
                                                         generator=generator)
        loader_kwargs = {"sampler": sampler}
    elif config.balance in ("sampler", "sqrt-sampler"):
        weights = np.maximum(counts, 1).astype(np.float64) ** balance_exponent(config.balance)
        sampler = torch.utils.data.WeightedRandomSampler(weights[np.asarray(labels)].tolist(), len(labels),
                                                         replacement=True, generator=generator)
        loader_kwargs = {"sampler": sampler}
    else:
        loader_kwargs = {"shuffle": True, "generator": generator}
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, drop_last=len(data) > config.batch_size,
                                         num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=config.num_workers > 0, **loader_kwargs)
    class_weights = None
    if config.balance == "loss":
        inverse = counts.sum() / np.maximum(counts, 1) / len(names)
        class_weights = torch.tensor(inverse, dtype=torch.float32, device=device)
    criterion = torch.nn.CrossEntropyLoss(weight=class_weights, label_smoothing=config.label_smoothing)

    steps_per_epoch = len(loader)
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=total_steps, lr_min=config.lr * 0.01,
                                  warmup_t=min(config.warmup_steps, total_steps // 4), warmup_lr_init=config.lr * 0.01,
                                  t_in_epochs=False)
    use_amp = config.mixed_precision and device.type == "cuda"

    best_score, best_state, history = -1.0, None, []
    step, epoch, started = 0, 0, time.time()
    progress = tqdm(total=total_steps, desc="train", unit="step")
    while step < total_steps:
        classifier.train()
        running, seen = 0.0, 0
        for pixels, targets in loader:
            pixels, targets = pixels.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = criterion(classifier(pixels), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            running, seen = running + loss.item() * len(targets), seen + len(targets)
            progress.update(1)
            progress.set_postfix(loss=f"{running / seen:.3f}", epoch=epoch)
            if step >= total_steps:
                break
        epoch += 1
        record = {"epoch": epoch, "step": step, "train_loss": running / max(seen, 1),
                  "images_per_s": step * config.batch_size / (time.time() - started)}
        last = step >= total_steps
        if val_dataset is not None and (epoch % config.eval_every == 0 or last):
            logits, val_labels = collect_logits(classifier, val_dataset, progress=False)
            metrics = metrics_from_logits(logits, val_labels, names)
            record.update(val_accuracy=metrics.accuracy, val_macro_f1=metrics.macro_f1)
            if metrics.macro_f1 > best_score:
                best_score, best_state = metrics.macro_f1, copy.deepcopy(classifier.state_dict())
        history.append(record)
        if log is not None:
            log(record)
    progress.close()

    if best_state is not None:
        classifier.load_state_dict(best_state)
    if val_dataset is not None:
        calibrate_classifier(classifier, train_dataset if config.fit_ood else None, val_dataset)
    classifier.info.update({"train_config": config.to_dict(), "history": history, "train_images": len(data)})
    return classifier.eval()


def calibrate_classifier(classifier: ImageClassifier, train_dataset: datasets.Dataset | None,
                         val_dataset: datasets.Dataset, ood_quantile: float = 0.995) -> ImageClassifier:
    """Fit the softmax temperature on ``val_dataset`` and, given ``train_dataset``, the out-of-distribution
    detector (training-feature Gaussians, thresholds at ``ood_quantile`` of validation scores)."""
    style = hasattr(classifier.model, "forward_intermediates")
    val_outputs = collect_outputs(classifier, val_dataset, progress=False, style=style)
    logits, val_features, val_labels = val_outputs[:3]
    classifier.temperature = fit_temperature(logits, val_labels)
    if train_dataset is not None:
        train_outputs = collect_outputs(classifier, train_dataset, progress=False, style=style)
        classifier.ood = fit_ood_detector(train_outputs[1], train_outputs[2], val_features,
                                          num_classes=len(classifier.label_names),
                                          train_style=train_outputs[3] if style else None,
                                          val_style=val_outputs[3] if style else None, quantile=ood_quantile)
    return classifier
