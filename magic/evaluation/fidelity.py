"""Class fidelity of a generator: does a separate classifier recognise the class each image was asked for?

Two figures, both from one held-out judge classifier that the generator never saw:

- **class fidelity**: the judge's accuracy on generated images, overall and per requested class;
- **Frechet distance** between the judge's pooled penultimate features of generated images and of a real split
  (FID's formula on a domain classifier's features instead of Inception's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image
from scipy import linalg
from tqdm.auto import tqdm

from ..classifiers.model import ImageClassifier


@dataclass
class FidelityReport:
    """Judge accuracy on generated images and the Frechet distance of their features to real images."""

    accuracy: float
    per_class: dict[str, float]
    frechet_distance: float
    per_class_frechet: dict[str, float]
    images_per_class: int
    judge_accuracy_on_real: float | None = None
    confusion_matrix: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def judge_outputs(judge: ImageClassifier, images: Sequence[Image.Image], batch_size: int = 128
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class indices and pooled features of the judge for ``images``."""
    judge.eval()
    predictions, features = [], []
    for start in range(0, len(images), batch_size):
        logits, pooled = judge.logits_and_features(judge.preprocess_images(list(images[start:start + batch_size])))
        predictions.append(logits.argmax(-1).cpu().numpy())
        features.append(pooled.float().cpu().numpy())
    return np.concatenate(predictions), np.concatenate(features).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets:
    ``|mu_a - mu_b|^2 + Tr(Sa + Sb - 2 sqrt(Sa Sb))``."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Need at least two feature vectors on each side; got {len(a)} and {len(b)}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # near-singular product: regularise both covariances slightly
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def reconstruction_psnr(originals: Sequence[Image.Image], reconstructions: Sequence[Image.Image]) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each reconstruction against its original (8-bit RGB; inf where they are
    identical): how much of the pixels an autoencoder's round trip keeps, whatever a judge makes of them."""
    if len(originals) != len(reconstructions):
        raise ValueError(f"Got {len(originals)} originals but {len(reconstructions)} reconstructions; pass one "
                         "reconstruction per original, in the same order.")
    values = []
    for original, reconstruction in zip(originals, reconstructions):
        if original.size != reconstruction.size:
            raise ValueError(f"An original is {original.size[0]}x{original.size[1]} px but its reconstruction "
                             f"{reconstruction.size[0]}x{reconstruction.size[1]}; resize the originals to the "
                             "autoencoder's size first.")
        a = np.asarray(original.convert("RGB"), dtype=np.float64)
        b = np.asarray(reconstruction.convert("RGB"), dtype=np.float64)
        mse = ((a - b) ** 2).mean()
        values.append(np.inf if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
    return np.array(values)


def class_fidelity(
    generated: Sequence[Image.Image],
    requested: Sequence[int],
    judge: ImageClassifier,
    real: Sequence[Image.Image],
    real_labels: Sequence[int],
    class_names: Sequence[str],
) -> FidelityReport:
    """Judge ``generated`` images (each asked to show class ``requested[i]``) against the real images' features.

    ``class_names`` are the generator's classes, in the judge's label order (the judge must know every one).
    """
    missing = [name for name in class_names if name not in judge.label_names]
    if missing:
        raise ValueError(f"The judge does not know {missing}; it knows {judge.label_names}.")
    if len(generated) != len(requested):
        raise ValueError(f"{len(generated)} generated images but {len(requested)} requested classes.")
    to_judge = {i: judge.label_names.index(name) for i, name in enumerate(class_names)}
    requested = np.array([to_judge[int(i)] for i in requested])
    real_labels = np.array([to_judge[int(i)] for i in real_labels])
    predicted, features = judge_outputs(judge, generated)
    real_predicted, real_features = judge_outputs(judge, real)
    per_class, per_class_frechet = {}, {}
    for index, name in enumerate(class_names):
        mine, theirs = requested == to_judge[index], real_labels == to_judge[index]
        per_class[name] = float((predicted[mine] == requested[mine]).mean()) if mine.any() else float("nan")
        if mine.sum() >= 2 and theirs.sum() >= 2:
            per_class_frechet[name] = frechet_distance(features[mine], real_features[theirs])
    confusion = np.zeros((len(judge.label_names), len(judge.label_names)), dtype=int)
    np.add.at(confusion, (requested, predicted), 1)
    counts = np.bincount(requested, minlength=len(judge.label_names))
    return FidelityReport(
        accuracy=float((predicted == requested).mean()), per_class=per_class,
        frechet_distance=frechet_distance(features, real_features), per_class_frechet=per_class_frechet,
        images_per_class=int(counts[counts > 0].min()) if counts.any() else 0,
        judge_accuracy_on_real=float((real_predicted == real_labels).mean()),
        confusion_matrix=confusion.tolist(),
    )


def generate_per_class(generator, class_names: Sequence[str], prompt_template: str, per_class: int,
                       settings, batch_size: int = 64, class_loras: Mapping[str, str | os.PathLike] | None = None,
                       replace_loaded: bool = False) -> tuple[list[Image.Image], list[int]]:
    """``per_class`` text-to-image samples of every class (seeds ``settings.seed``, ``+1``, ...), in class order.

    A class named in ``class_loras`` is drawn with its own LoRA loaded on a clone of ``generator`` (CytoDiff's
    per-class adaptation), on top of any LoRA ``generator`` already has (``replace_loaded``: instead of it); the
    others by ``generator`` itself."""
    from ..generation import GenerationSettings
    from ..generation.class_loras import with_class_lora

    class_loras = dict(class_loras or {})
    unknown = sorted(set(class_loras) - set(class_names))
    if unknown:
        raise ValueError(f"class_loras names {unknown}, which are not among the classes {list(class_names)}.")
    images, labels = [], []
    for label, name in enumerate(tqdm(class_names, desc="generate per class", unit="class")):
        drawer = with_class_lora(generator, class_loras[name], replace_loaded) if name in class_loras else generator
        prompt = prompt_template.format(name=name.replace("_", " "))
        for start in range(0, per_class, batch_size):
            count = min(batch_size, per_class - start)
            batch_settings = GenerationSettings(steps=settings.steps, guidance=settings.guidance,
                                                strength=settings.strength, seed=settings.seed + start)
            images += drawer.text_to_image(prompt, batch_settings, num_images=count)
            labels += [label] * count
    return images, labels
