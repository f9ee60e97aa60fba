"""MAGIC suite: medically accurate synthetic images and the diagnostic models they improve."""

__version__ = "0.1.0"

from .classifiers import (
    EvaluationResult,
    ImageClassifier,
    Prediction,
    TrainConfig,
    create_classifier,
    evaluate_classifier,
    load_classifier,
    train_classifier,
)
from .data import imbalanced_subset, k_shot, load_image_dataset
from .hub import ModelNotFoundError, resolve_model
from .images import ImageInputError, open_image

__all__ = [
    "EvaluationResult",
    "ImageClassifier",
    "ImageInputError",
    "ModelNotFoundError",
    "Prediction",
    "TrainConfig",
    "create_classifier",
    "evaluate_classifier",
    "imbalanced_subset",
    "k_shot",
    "load_classifier",
    "load_image_dataset",
    "open_image",
    "resolve_model",
    "train_classifier",
]
