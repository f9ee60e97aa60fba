"""Experiments that test the papers' claims on this project's data: the augmentation harness."""

from .augment import run_augment_experiment
from .config import (
    AugmentExperimentConfig,
    ClassifierSpec,
    ConfigError,
    Controls,
    FastMode,
    RunSpec,
    SyntheticSource,
    config_from_dict,
    load_config,
    plan_runs,
)
from .mixing import mixing_weights

__all__ = [
    "AugmentExperimentConfig",
    "ClassifierSpec",
    "ConfigError",
    "Controls",
    "FastMode",
    "RunSpec",
    "SyntheticSource",
    "config_from_dict",
    "load_config",
    "mixing_weights",
    "plan_runs",
    "run_augment_experiment",
]
