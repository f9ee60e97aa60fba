"""One factory for every evaluator backend: ``load_evaluator("KIND:TARGET?option=value&...")``.

Examples::

    load_evaluator("embedded")                                   # the embedded evaluator (weights/checklist-evaluator)
    load_evaluator("embedded:path/to/folder")
    load_evaluator("openai:gpt-4o")                              # key from OPENAI_API_KEY
    load_evaluator("openai:medgemma?base_url=http://127.0.0.1:8000/v1&max_concurrency=2")
    load_evaluator("transformers:Qwen/Qwen2.5-VL-3B-Instruct?max_new_tokens=200")
    load_evaluator("classifier:magic-suite/wbc-classifier")          # a classifier's confidence as graded items
    load_evaluator("classifier:runs/reward?levels=0.5,0.7,0.9")
    load_evaluator("classifier:runs/reward-a+runs/reward-b")     # an ensemble: their mean probability

Options may also be given as keyword arguments. ``cache=`` takes a VerdictCache (or None for no cache).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from .base import Evaluator
from .cache import VerdictCache

_BACKENDS: dict[str, Callable[..., Evaluator]] = {}


def register_backend(kind: str):
    """Decorator: register a function ``(target, **options) -> Evaluator`` under ``kind``."""

    def decorator(builder: Callable[..., Evaluator]) -> Callable[..., Evaluator]:
        _BACKENDS[kind] = builder
        return builder

    return decorator


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def _coerce(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``"KIND:TARGET?a=1&b=x"`` -> (kind, target, {a: 1, b: "x"}). A bare folder or id means ``embedded``."""
    spec = spec.strip()
    head, _, query = spec.partition("?")
    options = {key: _coerce(value) for key, value in parse_qsl(query, keep_blank_values=False)}
    if head in _BACKENDS:  # a bare kind: its default model
        return head, "", options
    kind, sep, target = head.partition(":")
    if not sep or kind not in _BACKENDS:
        return "embedded", head, options
    return kind, target, options


def load_evaluator(spec: str = "embedded", cache: VerdictCache | None = None, **options) -> Evaluator:
    """Build the evaluator named by ``spec`` (see the module docstring); unknown kinds raise ValueError."""
    kind, target, parsed = parse_spec(spec)
    if kind not in _BACKENDS:
        raise ValueError(f"Unknown evaluator {spec!r}; kinds: {available_backends()}.")
    return _BACKENDS[kind](target, cache=cache, **{**parsed, **options})


@register_backend("embedded")
def _embedded(target: str, cache: VerdictCache | None = None, **options) -> Evaluator:
    from .embedded import DEFAULT_EVALUATOR, EmbeddedEvaluator

    if options:
        raise ValueError(f"The embedded evaluator takes no options, got {sorted(options)}.")
    return EmbeddedEvaluator.from_pretrained(target or DEFAULT_EVALUATOR, cache=cache)


@register_backend("openai")
def _openai(target: str, cache: VerdictCache | None = None, **options) -> Evaluator:
    from .openai_backend import OpenAIEvaluator

    if not target:
        raise ValueError("Name the model: openai:MODEL (e.g. openai:gpt-4o).")
    return OpenAIEvaluator(target, cache=cache, **options)


@register_backend("transformers")
def _transformers(target: str, cache: VerdictCache | None = None, **options) -> Evaluator:
    from .transformers_backend import TransformersEvaluator

    if not target:
        raise ValueError("Name the model: transformers:HUB_ID (e.g. transformers:Qwen/Qwen2.5-VL-3B-Instruct).")
    return TransformersEvaluator(target, cache=cache, **options)


@register_backend("classifier")
def _classifier(target: str, cache: VerdictCache | None = None, levels=None, device: str = "cpu",
                **options) -> Evaluator:
    from .classifier_backend import DEFAULT_LEVELS, ClassifierEvaluator

    if not target:
        raise ValueError("Name the classifier: classifier:FOLDER_OR_ID (e.g. classifier:magic-suite/wbc-classifier).")
    if options:
        raise ValueError(f"The classifier evaluator takes levels= and device= only, got {sorted(options)}.")
    if isinstance(levels, str):
        try:
            levels = [float(level) for level in levels.split(",") if level.strip()]
        except ValueError:
            raise ValueError(f"levels= takes comma-separated probabilities (e.g. 0.2,0.4,0.6), got {levels!r}.") \
                from None
    elif isinstance(levels, (int, float)):
        levels = [float(levels)]
    members = [member for member in target.split("+") if member]
    return ClassifierEvaluator.from_pretrained(members if len(members) > 1 else target,
                                               levels=levels or DEFAULT_LEVELS, cache=cache, device=device)
