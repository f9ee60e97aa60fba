"""ImageClassifier: a timm model with its label names, preprocessing and calibration, saved Hub-shaped."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.models import save_for_hf
from torch import nn

from ..data.transforms import PreprocessConfig, eval_transform
from ..hub import resolve_model
from .ood import OODDetector, pixel_gate

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: The intermediate stage (timm ``forward_intermediates`` index) whose statistics the style check uses.
STYLE_STAGE = 1


@dataclass
class Prediction:
    """Top-k classes of one image, most probable first, with calibrated probabilities."""

    labels: list[str]
    probabilities: list[float]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities))


@dataclass
class Assessment:
    """A prediction together with whether the model should be trusted on this input.

    ``status`` is ``ok``, ``unsure`` (top probability below the confidence floor) or ``out_of_distribution`` (the
    image's features are far from every training class); ``reason`` explains a non-ok status in words.
    """

    prediction: Prediction
    status: str
    ood_score: float | None  # > 1: out of distribution (see magic.classifiers.ood); None without a detector
    reason: str = ""


class ImageClassifier(nn.Module):
    """A timm classifier that knows its class names, preprocessing and softmax temperature.

    Saved as ``model.safetensors`` + timm's ``config.json`` (loadable with ``timm.create_model("local-dir:...")``
    or ``"hf-hub:..."``); the project's extra fields live under ``config["magic"]``.
    """

    def __init__(
        self,
        model: nn.Module,
        architecture: str,
        label_names: list[str],
        preprocess: PreprocessConfig,
        temperature: float = 1.0,
        info: dict[str, Any] | None = None,
        ood: OODDetector | None = None,
    ):
        super().__init__()
        if model.num_classes != len(label_names):
            raise ValueError(f"The model has {model.num_classes} outputs but {len(label_names)} label names.")
        self.model = model
        self.architecture = architecture
        self.label_names = list(label_names)
        self.preprocess = preprocess
        self.temperature = float(temperature)
        self.info = dict(info or {})
        self.ood = ood
        self._transform = eval_transform(preprocess)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, num_classes) logits (not temperature-scaled)."""
        return self.model(pixel_values)

    def logits_and_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised pixels -> (B, num_classes) logits and (B, D) pooled penultimate features."""
        features = self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)
        return self.model.get_classifier()(features), features

    def style_features(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """(B, 2C) channel means and standard deviations after the first stage: the low-level appearance (stain,
        lighting, texture) the out-of-distribution style check compares; None for a model without
        ``forward_intermediates``."""
        if not hasattr(self.model, "forward_intermediates"):
            return None
        (early,) = self.model.forward_intermediates(pixel_values, indices=(STYLE_STAGE,), intermediates_only=True,
                                                    stop_early=True)
        early = early.float()
        return torch.cat([early.mean(dim=(2, 3)), early.std(dim=(2, 3))], dim=1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess_images(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, 3, H, W) normalised batch on the model's device."""
        return torch.stack([self._transform(image.convert("RGB")) for image in images]).to(self.device)

    @torch.inference_mode()
    def predict_proba(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities, shape (len(images), num_classes)."""
        self.eval()
        out = []
        for start in range(0, len(images), batch_size):
            logits = self(self.preprocess_images(images[start : start + batch_size])).float()
            out.append(torch.softmax(logits / self.temperature, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), dtype=np.float32)

    def _top_k(self, probabilities: np.ndarray, top_k: int) -> Prediction:
        """One row of class probabilities -> its top-k (k clipped to 1..num_classes)."""
        order = np.argsort(-probabilities)[: max(1, min(int(top_k), len(self.label_names)))]
        return Prediction([self.label_names[i] for i in order], [float(probabilities[i]) for i in order])

    def predict(self, images: list[Image.Image] | Image.Image, top_k: int = 3) -> list[Prediction]:
        """Top-k labels with calibrated probabilities for each image."""
        if isinstance(images, Image.Image):
            images = [images]
        return [self._top_k(row, top_k) for row in self.predict_proba(images)]

    @torch.inference_mode()
    def assess(self, images: list[Image.Image] | Image.Image, top_k: int = 3,
               min_confidence: float = 0.5) -> list[Assessment]:
        """Top-k predictions plus a trust verdict per image (see Assessment).

        Out-of-distribution needs a fitted detector (``magic.classifiers.ood``); without one only the confidence
        floor applies.
        """
        if isinstance(images, Image.Image):
            images = [images]
        self.eval()
        pixels = self.preprocess_images(images)
        logits, features = self.logits_and_features(pixels)
        probabilities = torch.softmax(logits.float() / self.temperature, dim=-1).cpu().numpy()
        scores = [None] * len(images)
        if self.ood is not None:
            style = self.style_features(pixels) if self.ood.style is not None else None
            scores = self.ood.score(features.cpu(), style.cpu() if style is not None else None).tolist()
        results = []
        for image, row, score in zip(images, probabilities, scores):
            prediction = self._top_k(row, top_k)
            gate = pixel_gate(image)
            if gate:
                status, reason = "out_of_distribution", gate
            elif score is not None and score > 1:
                status = "out_of_distribution"
                reason = ("This image does not look like the images the model was trained on "
                          f"(out-of-distribution score {score:.2f}; above 1 means farther from the training images, "
                          "in content or in appearance, than 99.5 % of real validation images).")
            elif prediction.probabilities[0] < min_confidence:
                status = "unsure"
                reason = (f"The model is unsure: its top answer has probability {prediction.probabilities[0]:.0%}, "
                          f"below {min_confidence:.0%}.")
            else:
                status, reason = "ok", ""
            results.append(Assessment(prediction, status, score, reason))
        return results

    def save_pretrained(self, save_directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (timm layout) into ``save_directory``.

        ``dtype=torch.float16`` halves the file; loading casts back to float32.
        """
        save_directory = Path(save_directory)
        model_config = {
            "label_names": self.label_names,
            "magic": {"temperature": self.temperature, **self.info},
        }
        data_config = self.preprocess.to_dict()
        source = self.model.pretrained_cfg
        # facts about the ImageNet checkpoint the model started from do not describe these weights
        self.model.pretrained_cfg = {k: v for k, v in source.items() if k not in ("tag", "license", "url", "hf_hub_id")}
        try:
            save_for_hf(self.model, save_directory, model_config=model_config, data_config=data_config,
                        safe_serialization=True)
        finally:
            self.model.pretrained_cfg = source
        if dtype is not None:
            from safetensors.torch import save_file

            state = {key: value.to(dtype) if value.is_floating_point() else value
                     for key, value in self.model.state_dict().items()}
            save_file(state, save_directory / WEIGHTS_NAME, metadata={"format": "pt"})
        if self.ood is not None:
            self.ood.save(save_directory)
        return save_directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                        revision: str | None = None) -> ImageClassifier:
        """Load from a folder, an embedded model id (``magic-suite/NAME``) or a Hub repo id."""
        folder = resolve_model(name_or_path, revision=revision)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(f"{folder} needs {CONFIG_NAME} and {WEIGHTS_NAME} (safetensors only).")
        config = json.loads(config_path.read_text())
        pretrained_cfg = config.get("pretrained_cfg", {})
        model_args = {**config.get("model_args", {}), "num_classes": config["num_classes"]}
        model = timm.create_model(config["architecture"], pretrained=False, **model_args)
        state = {key: value.float() if value.is_floating_point() else value
                 for key, value in load_file(weights_path).items()}
        model.load_state_dict(state)
        model.pretrained_cfg = {**model.pretrained_cfg, **pretrained_cfg}
        extra = dict(config.get("magic", {}))
        temperature = float(extra.pop("temperature", 1.0))
        label_names = config.get("label_names") or pretrained_cfg.get("label_names")
        if not label_names:
            label_names = [str(i) for i in range(config["num_classes"])]
        classifier = cls(model, config["architecture"], list(label_names), PreprocessConfig.from_dict(pretrained_cfg),
                         temperature=temperature, info=extra, ood=OODDetector.load(folder))
        return classifier.to(device).eval()
