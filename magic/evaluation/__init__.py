"""Checklist evaluators: image + condition checklist -> Verdict (0/1 per item, reasons, score), MAGIC-style.

``load_evaluator(spec)`` builds any backend: the embedded evaluator (offline), an OpenAI-compatible chat endpoint,
a local transformers vision-language model, or a trained image classifier's confidence as graded items. Backends
load their heavy modules on first use.
"""

from __future__ import annotations

import importlib

from .base import ChatEvaluator, Evaluator, as_checklist
from .cache import VerdictCache, image_digest
from .factory import available_backends, load_evaluator, parse_spec, register_backend
from .preferences import PreferencePair, load_preferences, make_pairs, preference, save_preferences
from .prompt import build_prompt, format_answer, parse_answer, parse_prompt
from .verdict import Checklist, EvaluationError, MalformedAnswerError, Verdict

_LAZY = {
    "ClassifierEvaluator": "magic.evaluation.classifier_backend",
    "EmbeddedEvaluator": "magic.evaluation.embedded",
    "EmbeddedScorer": "magic.evaluation.embedded_model",
    "OpenAIEvaluator": "magic.evaluation.openai_backend",
    "TransformersEvaluator": "magic.evaluation.transformers_backend",
}

__all__ = [
    "ChatEvaluator", "Checklist", "EvaluationError", "Evaluator", "MalformedAnswerError", "PreferencePair", "Verdict",
    "VerdictCache", "as_checklist", "available_backends", "build_prompt", "format_answer", "image_digest",
    "load_evaluator", "load_preferences", "make_pairs", "parse_answer", "parse_prompt", "parse_spec", "preference",
    "register_backend", "save_preferences", *_LAZY,
]


def __getattr__(name: str):
    if name == "train_embedded":
        return importlib.import_module("magic.evaluation.train_embedded")
    if name not in _LAZY:
        raise AttributeError(f"module 'magic.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
