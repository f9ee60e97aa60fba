"""Train and eval image transforms, built by timm from a model's preprocessing config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from PIL import Image
from timm.data import create_transform


@dataclass
class PreprocessConfig:
    """How images are fed to a classifier; stored in config.json as timm's ``pretrained_cfg``."""

    input_size: tuple[int, int, int] = field(default=(3, 128, 128), metadata={"help": "Channels, height, width."})
    mean: tuple[float, float, float] = field(default=(0.5, 0.5, 0.5), metadata={"help": "Per-channel mean."})
    std: tuple[float, float, float] = field(default=(0.5, 0.5, 0.5), metadata={"help": "Per-channel std."})
    interpolation: str = field(default="bicubic", metadata={"help": "Resize interpolation."})
    crop_pct: float = field(default=1.0, metadata={"help": "Centre-crop fraction at eval (1.0: resize only)."})
    crop_mode: str = field(default="center", metadata={"help": "timm crop mode at eval."})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        for key in ("input_size", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


@dataclass
class AugmentConfig:
    """Training-time augmentation (timm's create_transform arguments)."""

    scale: tuple[float, float] = field(default=(0.6, 1.0), metadata={"help": "RandomResizedCrop area range."})
    hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability."})
    vflip: float = field(default=0.5, metadata={"help": "Vertical flip probability (cells/lesions have no 'up')."})
    color_jitter: float = field(default=0.2, metadata={"help": "Brightness/contrast/saturation jitter strength."})
    re_prob: float = field(default=0.0, metadata={"help": "Random-erasing probability."})


def eval_transform(preprocess: PreprocessConfig):
    """PIL image -> normalised tensor, as at evaluation and inference."""
    return create_transform(
        input_size=preprocess.input_size,
        is_training=False,
        interpolation=preprocess.interpolation,
        mean=preprocess.mean,
        std=preprocess.std,
        crop_pct=preprocess.crop_pct,
        crop_mode=preprocess.crop_mode,
    )


def train_transform(preprocess: PreprocessConfig, augment: AugmentConfig | None = None):
    """PIL image -> augmented, normalised tensor for training."""
    augment = augment or AugmentConfig()
    return create_transform(
        input_size=preprocess.input_size,
        is_training=True,
        scale=augment.scale,
        ratio=(3 / 4, 4 / 3),
        hflip=augment.hflip,
        vflip=augment.vflip,
        color_jitter=augment.color_jitter,
        re_prob=augment.re_prob,
        interpolation=preprocess.interpolation,
        mean=preprocess.mean,
        std=preprocess.std,
    )


def to_batch(images: list[Image.Image], preprocess: PreprocessConfig) -> torch.Tensor:
    """Stack RGB PIL images into one normalised batch tensor (B, 3, H, W)."""
    transform = eval_transform(preprocess)
    return torch.stack([transform(image.convert("RGB")) for image in images])
