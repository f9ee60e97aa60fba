"""Datasets, subsets and transforms."""

from .datasets import (
    DatasetFormatError,
    TorchImageDataset,
    check_image_dataset,
    class_names,
    labels_of,
    load_image_dataset,
)
from .subsets import IMBALANCE_PROFILES, SubsetError, imbalanced_subset, k_shot, scale_profile, subset_from_counts
from .transforms import AugmentConfig, PreprocessConfig, eval_transform, to_batch, train_transform

__all__ = [
    "AugmentConfig",
    "DatasetFormatError",
    "IMBALANCE_PROFILES",
    "PreprocessConfig",
    "SubsetError",
    "TorchImageDataset",
    "check_image_dataset",
    "class_names",
    "eval_transform",
    "imbalanced_subset",
    "k_shot",
    "labels_of",
    "load_image_dataset",
    "scale_profile",
    "subset_from_counts",
    "to_batch",
    "train_transform",
]
