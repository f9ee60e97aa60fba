"""Image classifiers: one factory, training, evaluation, calibration, Hub-shaped save/load."""

from .calibration import fit_temperature, nll
from .evaluate import EvaluationResult, collect_logits, evaluate_classifier, metrics_from_logits
from .factory import DEFAULT_ARCHITECTURE, create_classifier, load_classifier
from .model import ImageClassifier, Prediction
from .train import TrainConfig, train_classifier

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "EvaluationResult",
    "ImageClassifier",
    "Prediction",
    "TrainConfig",
    "collect_logits",
    "create_classifier",
    "evaluate_classifier",
    "fit_temperature",
    "load_classifier",
    "metrics_from_logits",
    "nll",
    "train_classifier",
]
