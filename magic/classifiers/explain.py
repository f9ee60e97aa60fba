"""Saliency maps: Grad-CAM over a timm classifier's last feature map, and an overlay for display."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .model import ImageClassifier


def grad_cam(classifier: ImageClassifier, image: Image.Image, target: int | str | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of one image for class ``target`` (default: the predicted class).

    Returns an (H, W) float array in [0, 1] at the image's own size.
    """
    classifier.eval()
    pixels = classifier.preprocess_images([image])
    with torch.enable_grad():
        features = classifier.model.forward_features(pixels)  # (1, C, h, w)
        features.retain_grad()
        logits = classifier.model.forward_head(features)  # (1, num_classes)
        if target is None:
            index = int(logits.argmax(dim=-1))
        elif isinstance(target, str):
            index = classifier.label_names.index(target)
        else:
            index = int(target)
        classifier.model.zero_grad(set_to_none=True)
        logits[0, index].backward()
    weights = features.grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = torch.relu((weights * features).sum(dim=1))[0].detach()  # (h, w)
    cam = cam - cam.min()
    cam = cam / cam.max() if float(cam.max()) > 0 else cam
    heat = Image.fromarray((cam.cpu().numpy() * 255).astype(np.uint8)).resize(image.size, Image.BICUBIC)
    return np.asarray(heat, dtype=np.float32) / 255.0


def overlay(image: Image.Image, saliency: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a [0, 1] saliency map (jet colour map) over the RGB image."""
    heat = (colormaps["jet"](saliency)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(heat).resize(image.size), alpha)
