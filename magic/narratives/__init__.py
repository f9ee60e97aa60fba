"""Patient narratives and the narrative side of image + narrative diagnosis (Chain of Options)."""

from .dataset import PAD_LABELS, NarrativeDatasetConfig, build_narrative_dataset, load_narratives
from .facts import PatientFacts, extract_facts, facts_from_row
from .ham import HamNarrativeConfig, build_ham_narrative_dataset
from .model import NarrativeClassifier, load_narrative_classifier
from .phrasing import render_narrative

__all__ = [
    "PAD_LABELS",
    "HamNarrativeConfig",
    "NarrativeClassifier",
    "NarrativeDatasetConfig",
    "PatientFacts",
    "build_ham_narrative_dataset",
    "build_narrative_dataset",
    "extract_facts",
    "facts_from_row",
    "load_narrative_classifier",
    "load_narratives",
    "render_narrative",
]
