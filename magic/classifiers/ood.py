"""Out-of-distribution detection: Mahalanobis distance of penultimate features to the training classes.

The features are reduced with PCA (fitted on training features), each class is a Gaussian with a shared covariance
(Lee et al. 2018), and the threshold is a high quantile of the distances of real validation images, so a chosen
share of in-distribution images (e.g. 1 %) is flagged by construction.
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
    threshold: torch.Tensor  # () distance above which an input is out of distribution

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) distance to the nearest class."""
        z = (features.float() - self.mean) @ self.components.T  # (N, k)
        diff = z[:, None, :] - self.class_means[None]  # (N, C, k)
        squared = torch.einsum("nck,kl,ncl->nc", diff, self.precision, diff)
        return squared.clamp_min(0).min(dim=1).values.sqrt()

    def is_outlier(self, features: torch.Tensor) -> torch.Tensor:
        return self.distance(features) > self.threshold

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / OOD_WEIGHTS_NAME
        save_file({name: getattr(self, name).contiguous() for name in self.__dataclass_fields__}, path,
                  metadata={"format": "pt", "method": "pca-mahalanobis"})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureDistance | None:
        path = Path(folder) / OOD_WEIGHTS_NAME
        if not path.is_file():
            return None
        return cls(**{name: value.float() for name, value in load_file(path).items()})


def fit_feature_distance(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    num_classes: int,
    dims: int = 64,
    quantile: float = 0.99,
    shrinkage: float = 1e-3,
) -> FeatureDistance:
    """Fit the detector on training features and set its threshold at ``quantile`` of validation distances."""
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
    detector = FeatureDistance(mean, components, class_means, torch.linalg.inv(covariance), torch.tensor(0.0))
    detector.threshold = torch.quantile(detector.distance(val_features), quantile)
    return detector
