"""Train the embedded checklist evaluator on real labelled images and their conditions' checklists.

The image tower (ImageNet EfficientNet-Lite0) and the text tower (MiniLM) stay frozen, so their outputs are computed
once (and cached under ``.cache/evaluator-features``); only the two projections and the logit scale/bias are
trained, with a SigLIP-style sigmoid contrastive loss: every image against every known checklist item, positive
for the items of its own condition, negative for all others. Thresholds per item are then fitted on the validation
split, and a validity detector (Mahalanobis distance in the joint space) on the training images.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..catalog import Catalog, load_catalog
from .embedded_model import (
    ChecklistScorer,
    EmbeddedScorer,
    ScorerConfig,
    encode_texts,
    fit_validity,
    image_backbone,
    pixels,
    validity_distances,
)

FEATURE_CACHE = Path(os.environ.get("MAGIC_FEATURE_CACHE", Path(__file__).resolve().parents[2] / ".cache"
                                    / "evaluator-features"))

#: Seconds each feature file took to compute (read back from the cache; NaN when not recorded).
EXTRACTION_SECONDS: dict[tuple[str, str, str], float] = {}

#: Label-preserving views of the training images (cells and dermoscopy have no "up").
VIEWS = ("identity", "hflip", "vflip", "rot90")


@dataclass
class EmbeddedTrainConfig:
    """How the embedded evaluator is trained."""

    steps: int = field(default=3000, metadata={"help": "Optimiser steps over precomputed features."})
    batch_size: int = field(default=256, metadata={"help": "Images per step."})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate (cosine decay)."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    views: int = field(default=1, metadata={"help": "Augmented views of each training image (1-4)."})
    feature_noise: float = field(default=0.0, metadata={"help": "Gaussian noise on features (regulariser)."})
    validity_quantile: float = field(default=0.995, metadata={
        "help": "Share of real validation images the validity detector must accept."})
    validity_components: int = field(default=64, metadata={"help": "PCA components of the validity detector."})
    seed: int = 0


def _view(image, view: str):
    from PIL import Image

    if view == "hflip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if view == "vflip":
        return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if view == "rot90":
        return image.transpose(Image.Transpose.ROTATE_90)
    return image


def precompute_features(data: str, split: str, config: ScorerConfig, view: str = "identity",
                        backbone: torch.nn.Module | None = None, batch_size: int = 128,
                        log: Callable[[str], None] = print) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Frozen EfficientNet-Lite0 features (N, 1280) fp16, labels (N,) and class names of one split (cached)."""
    from ..data import class_names, load_image_dataset

    name = Path(str(data).rstrip("/")).name
    dataset = load_image_dataset(data, split=split)
    # the datasets fingerprint changes with the data, so a stale cache file is never reused
    path = FEATURE_CACHE / f"{name}-{split}-{dataset._fingerprint[:12]}-{config.image_size}px-{view}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        EXTRACTION_SECONDS[(name, split, view)] = float(saved.get("seconds", float("nan")))
        return saved["features"], saved["labels"], list(saved["names"])
    names = class_names(dataset)
    backbone = backbone if backbone is not None else image_backbone(pretrained=True).eval()
    features, start = [], time.time()
    with torch.inference_mode():
        for first in range(0, len(dataset), batch_size):
            rows = dataset[first:first + batch_size]
            images = [_view(image.convert("RGB"), view) for image in rows["image"]]
            features.append(backbone(pixels(images, config)).half())
            if first // batch_size % 20 == 0:
                log(f"features {name}/{split}/{view}: {first + len(images)}/{len(dataset)} "
                    f"({time.time() - start:.0f} s)")
    out = torch.cat(features)
    labels = torch.tensor(dataset["label"])
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = EXTRACTION_SECONDS[(name, split, view)] = round(time.time() - start, 1)
    torch.save({"features": out, "labels": labels, "names": names, "seconds": seconds}, path)
    return out, labels, names


@dataclass
class Domain:
    """One labelled dataset and the catalog whose checklists describe its classes."""

    data: str
    catalog: Catalog


def domain_items(domain: Domain, names: list[str]) -> list[tuple[int, str]]:
    """(class index, checklist item text) for every class, including the skin-tone colour variants."""
    pairs = []
    for index, label in enumerate(names):
        condition = domain.catalog.get(label)
        for text in domain.catalog.checklist(condition.id):
            pairs.append((index, text))
        for tone in condition.colour_by_skin_tone:
            for text in domain.catalog.checklist(condition.id, skin_tone=tone):
                if (index, text) not in pairs:
                    pairs.append((index, text))
    return pairs


def _siglip_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Sigmoid contrastive loss; positives are up-weighted so each image's positives and negatives count equally."""
    sign = positive.float() * 2 - 1
    per_pair = -F.logsigmoid(sign * logits)  # (B, N)
    pos = (per_pair * positive).sum(1) / positive.sum(1).clamp(min=1)
    neg = (per_pair * ~positive).sum(1) / (~positive).sum(1).clamp(min=1)
    return (pos + neg).mean()


def _best_threshold(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """The threshold maximising balanced accuracy (Youden's J) between positive and negative scores."""
    candidates = np.unique(np.concatenate([scores_pos, scores_neg]))
    if len(candidates) > 400:
        candidates = np.quantile(candidates, np.linspace(0, 1, 401))
    best, best_j = 0.5, -1.0
    for threshold in candidates:
        j = (scores_pos >= threshold).mean() + (scores_neg < threshold).mean()
        if j > best_j:
            best, best_j = float(threshold), j
    return best


def train_embedded_evaluator(domains: list[Domain], config: EmbeddedTrainConfig | None = None,
                             scorer_config: ScorerConfig | None = None,
                             log: Callable[[str], None] = print) -> tuple[EmbeddedScorer, dict]:
    """Train on the domains' train splits, fit thresholds on validation; returns the scorer and a training record."""
    config = config or EmbeddedTrainConfig()
    scorer_config = scorer_config or ScorerConfig()
    torch.manual_seed(config.seed)
    started = time.time()
    backbone = image_backbone(pretrained=True).eval()

    # Known items: every checklist item of every class of every domain; item -> class id (global).
    items, item_class, class_offset, splits = [], [], 0, {"train": [], "validation": []}
    class_domain = []  # class id (global) -> index of its domain
    for number, domain in enumerate(domains):
        names = None
        for split in ("train", "validation"):
            views = VIEWS[:config.views] if split == "train" else VIEWS[:1]
            for view in views:
                features, labels, names = precompute_features(domain.data, split, scorer_config, view, backbone,
                                                              log=log)
                splits[split].append((features, labels + class_offset))
        for index, text in domain_items(domain, names):
            items.append(text)
            item_class.append(index + class_offset)
        class_domain += [number] * len(names)
        class_offset += len(names)
    feature_time = sum(EXTRACTION_SECONDS.get((Path(str(d.data).rstrip("/")).name, split, view), float("nan"))
                       for d in domains for split, views in (("train", VIEWS[:config.views]),
                                                             ("validation", VIEWS[:1])) for view in views)
    log(f"{len(items)} checklist items over {class_offset} classes; feature extraction took {feature_time:.0f} s "
        f"(NaN: not recorded in the cache)")

    text_embeddings = encode_texts(items)  # (N, 384), frozen
    item_class_t = torch.tensor(item_class)
    train_x = torch.cat([f for f, _ in splits["train"]]).float()
    train_y = torch.cat([y for _, y in splits["train"]])
    val_x = torch.cat([f for f, _ in splits["validation"]]).float()
    val_y = torch.cat([y for _, y in splits["validation"]])

    model = ChecklistScorer(scorer_config, backbone=backbone)
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.steps,
                                                   pct_start=0.05)
    # class-balanced sampling: each class equally often, so rare classes (basophils) are learnt too
    class_counts = torch.bincount(train_y, minlength=class_offset).float()
    weights = (1.0 / class_counts)[train_y]
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    train_start = time.time()
    for step in range(config.steps):
        index = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
        x, y = train_x[index], train_y[index]
        if config.feature_noise:
            x = x + config.feature_noise * torch.randn_like(x)
        logits = model.logits(x, text_embeddings)  # (B, N)
        loss = _siglip_loss(logits, y[:, None] == item_class_t[None, :])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 250 == 0 or step == config.steps - 1:
            log(f"step {step}: loss {loss.item():.4f} ({time.time() - train_start:.0f} s)")
    model.eval()

    with torch.inference_mode():
        val_prob = torch.sigmoid(model.logits(val_x, text_embeddings)).numpy()  # (V, N)
    # per-item thresholds: images of the item's class vs images of the other classes of the same domain
    thresholds, domain_of_class = [], np.asarray(class_domain)
    val_y_np, item_class_np = val_y.numpy(), item_class_t.numpy()
    for column, owner in enumerate(item_class_np):
        same_domain = domain_of_class[val_y_np] == domain_of_class[owner]
        positive = val_y_np == owner
        thresholds.append(_best_threshold(val_prob[positive, column], val_prob[same_domain & ~positive, column]))
    default_threshold = float(np.median(thresholds))
    # validation agreement per domain (thresholds were fitted here, so optimistic; for comparing settings only)
    passed = val_prob >= np.asarray(thresholds)[None, :]  # (V, N)
    own = val_y_np[:, None] == item_class_np[None, :]
    same = domain_of_class[val_y_np][:, None] == domain_of_class[item_class_np][None, :]
    validation = {Path(domain.data.rstrip("/")).name: {
        "own_pass_rate": float(passed[own & (domain_of_class[val_y_np] == number)[:, None]].mean()),
        "other_pass_rate": float(passed[~own & same & (domain_of_class[val_y_np] == number)[:, None]].mean()),
    } for number, domain in enumerate(domains)}
    log(f"validation agreement (thresholds fitted on it): {json.dumps(validation)}")

    # validity: PCA subspace of the (identity-view) training features; limits at a quantile of validation images
    validity = fit_validity(train_x[: len(train_y) // config.views], config.validity_components)
    val_distance, val_residual = validity_distances(val_x, validity)
    val_domain = torch.from_numpy(domain_of_class[val_y_np])
    # each domain's own quantile, the loosest one kept: the smaller dataset is not refused more often
    validity_threshold = max(float(torch.quantile(val_distance[val_domain == number], config.validity_quantile))
                             for number in range(len(domains)))
    residual_threshold = max(float(torch.quantile(val_residual[val_domain == number], config.validity_quantile))
                             for number in range(len(domains)))

    record = {
        "train_config": asdict(config),
        "scorer_config": {key: list(value) if isinstance(value, tuple) else value
                          for key, value in asdict(scorer_config).items()},
        "datasets": [str(domain.data) for domain in domains],
        "catalogs": {domain.catalog.name: domain.catalog.version for domain in domains},
        "n_items": len(items),
        "validation": validation,
        "n_train_images": int(len(train_y) // config.views),
        "feature_seconds": None if feature_time != feature_time else round(feature_time, 1),
        "train_seconds": round(time.time() - train_start, 1),
        "total_seconds": round(time.time() - started, 1),
    }
    scorer = EmbeddedScorer(model, items, text_embeddings, thresholds, default_threshold, validity,
                            validity_threshold, residual_threshold, info={"training": record})
    return scorer, record


def default_domains(data_root: str | os.PathLike = "../shared/data") -> list[Domain]:
    """PBC blood cells with the ``pbc`` catalog and HAM10000 lesions with the ``ham10000`` catalog."""
    root = Path(data_root)
    return [Domain(str(root / "pbc"), load_catalog("pbc")), Domain(str(root / "ham10000"), load_catalog("ham10000"))]
