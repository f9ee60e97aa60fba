"""What an evaluator answers (``Verdict``) and what it is asked about (``Checklist``)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from ..catalog import Catalog, load_catalog


class EvaluationError(RuntimeError):
    """An evaluator could not produce a verdict (a malformed answer after all retries, an HTTP failure...)."""


class MalformedAnswerError(EvaluationError):
    """A model's answer does not contain a valid 0/1 list for the checklist; ``answer`` holds the raw text."""

    def __init__(self, message: str, answer: str = ""):
        super().__init__(message)
        self.answer = answer


@dataclass(frozen=True)
class Checklist:
    """The checklist of one condition: its items as ``"Label: sentence"`` plus where they come from.

    ``version`` is ``CATALOG@VERSION`` (``"custom"`` for hand-written checklists): verdicts are cached per version,
    so editing a catalog (and bumping its version) invalidates old verdicts.
    """

    condition_id: str
    condition_name: str
    items: tuple[str, ...]
    version: str = "custom"
    modality: str = "medical image"

    @classmethod
    def from_catalog(cls, catalog: Catalog | str, condition: str, skin_tone: str | None = None) -> Checklist:
        catalog = load_catalog(catalog) if isinstance(catalog, str) else catalog
        entry = catalog.get(condition)
        return cls(condition_id=entry.id, condition_name=entry.display_name,
                   items=tuple(catalog.checklist(entry.id, skin_tone=skin_tone)),
                   version=f"{catalog.name}@{catalog.version}", modality=catalog.modality)

    @classmethod
    def parse(cls, spec: str) -> Checklist:
        """``"CATALOG:CONDITION"`` (e.g. ``"pbc:basophil"``) -> that condition's checklist."""
        if ":" not in spec:
            raise ValueError(f"A checklist is named CATALOG:CONDITION (e.g. pbc:basophil), got {spec!r}.")
        catalog, condition = spec.split(":", 1)
        return cls.from_catalog(catalog, condition)

    @property
    def digest(self) -> str:
        """A short hash of the exact item texts (part of the cache key, next to ``version``)."""
        return hashlib.sha256("\n".join(self.items).encode("utf-8")).hexdigest()[:16]


@dataclass
class Verdict:
    """One evaluator's judgement of one image against one checklist (the paper's 0/1 vector + reasons)."""

    scores: list[int]
    rationales: list[str]
    condition_id: str
    checklist_version: str
    backend: str
    backend_version: str
    items: list[str] = field(default_factory=list)
    valid_image: bool = True
    raw_answer: str = ""
    cached: bool = False

    def __post_init__(self):
        if any(score not in (0, 1) for score in self.scores):
            raise ValueError(f"Verdict scores must be 0 or 1, got {self.scores}.")
        if len(self.rationales) != len(self.scores):
            raise ValueError("A Verdict needs one rationale per checklist item.")

    @property
    def score(self) -> int:
        """The total: how many checklist items the image meets (0-5 for the MAGIC checklists)."""
        return int(sum(self.scores))

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score}

    @classmethod
    def from_dict(cls, values: dict) -> Verdict:
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        return cls(**known)
