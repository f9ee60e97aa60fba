"""Backend (c): the embedded evaluator, a small dual encoder trained here, that works offline on CPU."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from PIL import Image

from .base import Evaluator
from .cache import VerdictCache
from .embedded_model import EmbeddedScorer
from .verdict import Checklist, Verdict

DEFAULT_EVALUATOR = "magic-suite/checklist-evaluator"


class EmbeddedEvaluator(Evaluator):
    """Scores each checklist item with the dual encoder; images unlike any training image get all zeros."""

    name = "embedded"

    def __init__(self, scorer: EmbeddedScorer, model_id: str = DEFAULT_EVALUATOR, cache: VerdictCache | None = None,
                 version: str | None = None):
        super().__init__(cache=cache)
        self.scorer = scorer
        self.model_id = model_id
        self.version = version or "unsaved"

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_EVALUATOR,
                        cache: VerdictCache | None = None) -> EmbeddedEvaluator:
        from ..hub import resolve_model

        folder = resolve_model(name_or_path)
        digest = hashlib.sha256()  # weights and thresholds: a retrained or recalibrated model is a new version
        for name in ("model.safetensors", "config.json"):
            digest.update((folder / name).read_bytes())
        return cls(EmbeddedScorer.from_pretrained(folder), model_id=str(name_or_path), cache=cache,
                   version=f"{folder.name}-{digest.hexdigest()[:12]}")

    @property
    def backend_id(self) -> str:
        return f"{self.name}:{self.version}"

    def judge(self, image: Image.Image, checklist: Checklist) -> Verdict:
        return self.judge_batch([image], [checklist])[0]

    def judge_batch(self, images: Sequence[Image.Image], checklists: Sequence[Checklist]) -> list[Verdict]:
        results = self.scorer.score(list(images), [list(checklist.items) for checklist in checklists])
        verdicts = []
        for checklist, result in zip(checklists, results, strict=True):
            scores, reasons = [], []
            for item in result["items"]:
                valid = not result["invalid_reason"]
                passed = valid and item.probability >= item.threshold
                scores.append(int(passed))
                known = "" if item.known else ", unseen item text: default threshold"
                if not valid:
                    reasons.append(f"not a valid image for this evaluator (0): {result['invalid_reason']}")
                else:
                    reasons.append(f"{'meets' if passed else 'does not meet'} this item: match "
                                   f"{item.probability:.2f} vs threshold {item.threshold:.2f}{known}")
            verdicts.append(Verdict(scores=scores, rationales=reasons, condition_id=checklist.condition_id,
                                    checklist_version=checklist.version, backend=self.name,
                                    backend_version=self.version, items=list(checklist.items),
                                    valid_image=not result["invalid_reason"]))
        return verdicts
