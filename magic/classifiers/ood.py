"""Out-of-distribution detection on a classifier's features, plus a pixel-level gate for blank and noise images.

``OODDetector`` combines two ``FeatureDistance`` checks, each scored as a ratio to a threshold at a high quantile
of real validation images (above 1 means out of distribution):

- *semantic*, on the pooled penultimate features: the Mahalanobis distance to the nearest training class in a PCA
  subspace (class Gaussians with a shared covariance, Lee et al. 2018) and the residual norm off that subspace;
- *style*, on the channel means and standard deviations of an early stage: low-level appearance (stain, lighting,
  texture), which tells a different kind of image (a blood smear shown to a skin model) from the training images
  even when its deep features happen to land near a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

OOD_WEIGHTS_NAME = "ood.safetensors"


@dataclass
class FeatureDistance:
    """Minimum class-conditional Mahalanobis distance in a PCA subspace, with its rejection threshold."""

    mean: torch.Tensor  # (D,) feature mean removed before projection
    components: torch.Tensor  # (k, D) PCA directions
    class_means: torch.Tensor  # (C, k) per-class means in the subspace
    precision: torch.Tensor  # (k, k) inverse of the shared within-class covariance
    threshold: torch.Tensor  # () Mahalanobis distance above which an input is out of distribution
    residual_threshold: torch.Tensor  # () residual norm above which an input is out of distribution

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) distance to the nearest class."""
        z = (features.float() - self.mean) @ self.components.T  # (N, k)
        diff = z[:, None, :] - self.class_means[None]  # (N, C, k)
        squared = torch.einsum("nck,kl,ncl->nc", diff, self.precision, diff)
        return squared.clamp_min(0).min(dim=1).values.sqrt()

    def residual(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) norm of the part the PCA subspace does not explain."""
        centred = features.float() - self.mean
        return (centred - (centred @ self.components.T) @ self.components).norm(dim=1)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) max of distance / threshold and residual / residual_threshold: > 1 means out of distribution."""
        return torch.maximum(self.distance(features) / self.threshold,
                             self.residual(features) / self.residual_threshold)

    def is_outlier(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features) > 1

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + name: getattr(self, name).contiguous() for name in self.__dataclass_fields__}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "") -> FeatureDistance:
        values = {name[len(prefix):]: value.float() for name, value in tensors.items() if name.startswith(prefix)}
        # Detectors saved before the residual check existed keep working with that check switched off.
        values.setdefault("residual_threshold", torch.tensor(float("inf")))
        return cls(**values)


@dataclass
class OODDetector:
    """Both checks of a classifier; saved as ``ood.safetensors`` beside its weights."""

    semantic: FeatureDistance  # on pooled penultimate features
    style: FeatureDistance | None = None  # on early-stage channel statistics (ImageClassifier.style_features)

    def score(self, features: torch.Tensor, style_features: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) the largest ratio of score to threshold over the checks: > 1 means out of distribution."""
        score = self.semantic.score(features)
        if self.style is not None and style_features is not None:
            score = torch.maximum(score, self.style.score(style_features))
        return score

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / OOD_WEIGHTS_NAME
        tensors = self.semantic.tensors("semantic.")
        if self.style is not None:
            tensors.update(self.style.tensors("style."))
        save_file(tensors, path, metadata={"format": "pt", "method": "pca-mahalanobis+residual; early-stage style"})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> OODDetector | None:
        path = Path(folder) / OOD_WEIGHTS_NAME
        if not path.is_file():
            return None
        tensors = load_file(path)
        if not any(name.startswith("semantic.") for name in tensors):  # the first format: one unprefixed check
            return cls(FeatureDistance.from_tensors(tensors))
        has_style = any(name.startswith("style.") for name in tensors)
        style = FeatureDistance.from_tensors(tensors, "style.") if has_style else None
        return cls(FeatureDistance.from_tensors(tensors, "semantic."), style)


def fit_feature_distance(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    num_classes: int,
    dims: int = 64,
    quantile: float = 0.995,
    shrinkage: float = 1e-3,
) -> FeatureDistance:
    """Fit one check on training features; each threshold is ``quantile`` of the validation scores (at 99.5 %, the
    checks together flag about 1-2 % of in-distribution images)."""
    features = train_features.float()
    mean = features.mean(dim=0)
    centred = features - mean
    dims = min(dims, centred.shape[0] - 1, centred.shape[1])
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    components = v[:dims]  # (k, D)
    z = centred @ components.T
    class_means = torch.stack([
        z[train_labels == c].mean(dim=0) if bool((train_labels == c).any()) else torch.zeros(dims)
        for c in range(num_classes)
    ])
    within = z - class_means[train_labels.long()]
    covariance = within.T @ within / max(len(within) - 1, 1)
    covariance += shrinkage * torch.trace(covariance) / dims * torch.eye(dims)
    detector = FeatureDistance(mean, components, class_means, torch.linalg.inv(covariance), torch.tensor(0.0),
                               torch.tensor(0.0))
    detector.threshold = torch.quantile(detector.distance(val_features), quantile)
    # with as many PCA directions as feature dimensions nothing is left off the subspace: no residual check
    detector.residual_threshold = (torch.quantile(detector.residual(val_features), quantile)
                                   if dims < features.shape[1] else torch.tensor(float("inf")))
    return detector


def fit_ood_detector(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    num_classes: int,
    train_style: torch.Tensor | None = None,
    val_style: torch.Tensor | None = None,
    quantile: float = 0.995,
) -> OODDetector:
    """Fit the semantic check and, given early-stage statistics, the style check (see the module docstring)."""
    semantic = fit_feature_distance(train_features, train_labels, val_features, num_classes, quantile=quantile)
    style = None
    if train_style is not None and val_style is not None:
        style = fit_feature_distance(train_style, train_labels, val_style, num_classes, quantile=quantile)
    return OODDetector(semantic, style)


def pixel_gate(image, min_std: float = 3.0, min_neighbour_correlation: float = 0.3) -> str:
    """Why an RGB PIL image cannot be a photograph or micrograph ("" when it can): almost uniform, or noise.

    Real images vary (std above ``min_std`` grey levels) and neighbouring pixels are strongly correlated; uniform
    noise has a correlation near 0.
    """
    import numpy as np

    grey = np.asarray(image.convert("L"), dtype=np.float64)
    if grey.std() < min_std:
        return "The image is almost uniform (a blank image), not a photograph or micrograph."
    a, b = grey[:, :-1].ravel(), grey[:, 1:].ravel()
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0
    if correlation < min_neighbour_correlation:
        return ("The image looks like random noise (neighbouring pixels are uncorrelated), not a photograph or "
                "micrograph.")
    return ""
