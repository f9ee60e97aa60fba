"""One factory for every image classifier: new (optionally pretrained) or loaded by name."""

from __future__ import annotations

import os

import timm
import torch

from ..data.transforms import PreprocessConfig
from .model import ImageClassifier
from .pretrained import PACKAGE_SOURCES, has_packaged_weights, load_packaged_weights

DEFAULT_ARCHITECTURE = "tf_efficientnet_lite0"


def create_classifier(
    architecture: str = DEFAULT_ARCHITECTURE,
    label_names: list[str] | None = None,
    pretrained: bool = True,
    image_size: int = 128,
    drop_rate: float = 0.2,
    **model_kwargs,
) -> ImageClassifier:
    """A new classifier for ``label_names`` built by timm.

    ``pretrained=True`` starts from ImageNet weights shipped by a registry package when the architecture has
    some (see ``magic.classifiers.pretrained``); otherwise it raises rather than silently starting from scratch.
    The preprocessing (mean/std/interpolation) follows the architecture's timm defaults at ``image_size``.
    """
    if not label_names:
        raise ValueError("create_classifier needs label_names (one per class).")
    if not timm.is_model(architecture):
        raise ValueError(f"Unknown timm architecture {architecture!r}; see timm.list_models().")
    model = timm.create_model(architecture, pretrained=False, num_classes=len(label_names), drop_rate=drop_rate,
                              **model_kwargs)
    if pretrained:
        if not has_packaged_weights(architecture):
            raise ValueError(f"No offline pretrained weights for {architecture!r}; pass pretrained=False to train "
                             "from scratch.")
        load_packaged_weights(model, architecture)
        head = model.get_classifier()
        torch.nn.init.trunc_normal_(head.weight, std=0.01)  # small logits at the start of fine-tuning
        torch.nn.init.zeros_(head.bias)
    defaults = model.pretrained_cfg
    preprocess = PreprocessConfig(
        input_size=(3, image_size, image_size),
        mean=tuple(defaults.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(defaults.get("std", (0.229, 0.224, 0.225))),
        interpolation=defaults.get("interpolation", "bicubic"),
        crop_pct=1.0,
    )
    start = f"ImageNet-1k {architecture} weights ({PACKAGE_SOURCES.get(architecture, 'packaged')})"
    info = {"pretrained": start if pretrained else None}
    return ImageClassifier(model, architecture, label_names, preprocess, info=info)


def load_classifier(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> ImageClassifier:
    """Load a saved classifier from a folder, an embedded id (``magic-suite/NAME``) or a Hub repo id."""
    return ImageClassifier.from_pretrained(name_or_path, device=device)
