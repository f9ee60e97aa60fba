"""A trained image classifier as an evaluator: graded "is it recognisably C?" items instead of expert checklists.

A checklist evaluator can be blind to a condition on the images it is shown (the embedded evaluator credits almost
no generated basophil), and then the feedback loop gets no signal for it. A classifier trained on real images of
every class always has an opinion. This backend turns its calibrated probability of the *requested* condition into
the paper's five 0/1 items, one per confidence level ("p(C) >= 0.2", ... "p(C) >= 0.95"), so the score keeps the
0-5 scale the preference rules expect: two images both under 0.6 both lose, two both over 0.95 both win, otherwise
the more confident one wins.

The items say what they measure (a classifier's confidence), not the checklist's clinical criteria; the verdict
records them as its own items. The measuring judge of a loop must be another model than the one optimised here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from PIL import Image

from .base import Evaluator
from .cache import VerdictCache
from .verdict import Checklist, Verdict

DEFAULT_LEVELS = (0.2, 0.4, 0.6, 0.8, 0.95)


class ClassifierEvaluator(Evaluator):
    """Scores an image for condition C by how confidently a classifier recognises C (one item per level)."""

    name = "classifier"

    def __init__(self, classifier, model_id: str = "", levels: Sequence[float] = DEFAULT_LEVELS,
                 cache: VerdictCache | None = None, version: str | None = None):
        super().__init__(cache=cache)
        levels = tuple(float(level) for level in levels)
        if not levels or any(not 0.0 < level <= 1.0 for level in levels) or list(levels) != sorted(set(levels)):
            raise ValueError(f"levels must be increasing probabilities in (0, 1], got {levels}.")
        self.classifier = classifier
        self.model_id = model_id
        self.levels = levels
        self.version = version or "unsaved"
        if levels != DEFAULT_LEVELS:  # other levels give other verdicts: never share a cache entry
            self.version += "-levels-" + "-".join(f"{level:g}" for level in levels)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, levels: Sequence[float] = DEFAULT_LEVELS,
                        cache: VerdictCache | None = None, device: str = "cpu") -> ClassifierEvaluator:
        """A classifier folder or id (as ``load_classifier`` takes); its weights' hash is the backend version."""
        from ..classifiers import load_classifier
        from ..hub import resolve_model

        folder = resolve_model(name_or_path)
        digest = hashlib.sha256()  # weights and temperature: a retrained or recalibrated model is a new version
        for name in ("model.safetensors", "config.json"):
            digest.update((folder / name).read_bytes())
        return cls(load_classifier(folder, device=device), model_id=str(name_or_path), levels=levels, cache=cache,
                   version=f"{folder.name}-{digest.hexdigest()[:12]}")

    @property
    def backend_id(self) -> str:
        return f"{self.name}:{self.version}"

    def items_for(self, checklist: Checklist) -> list[str]:
        """The graded items this backend answers for ``checklist``'s condition."""
        return [f"Recognisable: a classifier trained on real images gives {checklist.condition_name} a "
                f"probability of at least {level:g}" for level in self.levels]

    def _label_index(self, checklist: Checklist) -> int:
        names = self.classifier.label_names
        for candidate in (checklist.condition_id, checklist.condition_name):
            if candidate in names:
                return names.index(candidate)
        raise ValueError(f"The classifier {self.model_id or ''} knows {names}, not the condition "
                         f"{checklist.condition_id!r}; use a classifier trained on this catalog's classes.")

    def judge(self, image: Image.Image, checklist: Checklist) -> Verdict:
        return self.judge_batch([image], [checklist])[0]

    def judge_batch(self, images: Sequence[Image.Image], checklists: Sequence[Checklist]) -> list[Verdict]:
        indices = [self._label_index(checklist) for checklist in checklists]
        probabilities = self.classifier.predict_proba(list(images))
        verdicts = []
        for row, index, checklist in zip(probabilities, indices, checklists, strict=True):
            p = float(row[index])
            top = self.classifier.label_names[int(row.argmax())]
            scores = [int(p >= level) for level in self.levels]
            reasons = [f"p({checklist.condition_id}) = {p:.3f} {'>=' if passed else '<'} {level:g}"
                       f" (top class: {top} {float(row.max()):.3f})" for level, passed in zip(self.levels, scores)]
            verdicts.append(Verdict(scores=scores, rationales=reasons, condition_id=checklist.condition_id,
                                    checklist_version=checklist.version, backend=self.name,
                                    backend_version=self.version, items=self.items_for(checklist)))
        return verdicts
