"""MAGIC suite: medically accurate synthetic images and the diagnostic models they improve.

The public names below load their modules on first use, so ``import magic`` (and the CLI's start) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "EvaluationResult": "magic.classifiers",
    "ImageClassifier": "magic.classifiers",
    "Prediction": "magic.classifiers",
    "TrainConfig": "magic.classifiers",
    "create_classifier": "magic.classifiers",
    "evaluate_classifier": "magic.classifiers",
    "load_classifier": "magic.classifiers",
    "train_classifier": "magic.classifiers",
    "imbalanced_subset": "magic.data",
    "k_shot": "magic.data",
    "load_image_dataset": "magic.data",
    "load_catalog": "magic.catalog",
    "GenerationSettings": "magic.generation",
    "Generator": "magic.generation",
    "ModelNotFoundError": "magic.hub",
    "resolve_model": "magic.hub",
    "ImageInputError": "magic.images",
    "open_image": "magic.images",
    "publish": "magic.publish",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'magic' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

