"""A trained image classifier as an evaluator: graded "is it recognisably C?" items instead of expert checklists.

A checklist evaluator can be blind to a condition on the images it is shown (the embedded evaluator credits almost
no generated basophil), and then the feedback loop gets no signal for it. A classifier trained on real images of
every class always has an opinion. This backend turns its calibrated probability of the *requested* condition into
the paper's five 0/1 items, one per confidence level ("p(C) >= 0.2", ... "p(C) >= 0.95"), so the score keeps the
0-5 scale the preference rules expect: two images both under 0.6 both lose, two both over 0.95 both win, otherwise
the more confident one wins.

Several classifiers make an ensemble (``classifier:A+B``): the items then grade their mean probability, which is
harder for a generator to game than one model's (the feedback loop optimises against this score). The items say
what they measure (a classifier's confidence), not the checklist's clinical criteria; the verdict records them as
its own items. The measuring judge of a loop must be another model than the ones optimised here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .base import Evaluator
from .cache import VerdictCache
from .verdict import Checklist, Verdict

DEFAULT_LEVELS = (0.2, 0.4, 0.6, 0.8, 0.95)


class ClassifierEvaluator(Evaluator):
    """Scores an image for condition C by how confidently a classifier (or the mean of several) recognises C, one
    item per level."""

    name = "classifier"

    def __init__(self, classifier, model_id: str = "", levels: Sequence[float] = DEFAULT_LEVELS,
                 cache: VerdictCache | None = None, version: str | None = None):
        super().__init__(cache=cache)
        levels = tuple(float(level) for level in levels)
        if not levels or any(not 0.0 < level <= 1.0 for level in levels) or list(levels) != sorted(set(levels)):
            raise ValueError(f"levels must be increasing probabilities in (0, 1], got {levels}.")
        members = list(classifier) if isinstance(classifier, Sequence) else [classifier]
        if not members:
            raise ValueError("Give at least one classifier.")
        self.label_names = list(members[0].label_names)
        for member in members[1:]:
            if sorted(member.label_names) != sorted(self.label_names):
                raise ValueError(f"An ensemble's classifiers must know the same classes: {self.label_names} vs "
                                 f"{list(member.label_names)}.")
        self.classifiers = members
        self.model_id = model_id
        self.levels = levels
        self.version = version or "unsaved"
        if levels != DEFAULT_LEVELS:  # other levels give other verdicts: never share a cache entry
            self.version += "-levels-" + "-".join(f"{level:g}" for level in levels)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | Sequence[str | os.PathLike],
                        levels: Sequence[float] = DEFAULT_LEVELS, cache: VerdictCache | None = None,
                        device: str = "cpu") -> ClassifierEvaluator:
        """A classifier folder or id (as ``load_classifier`` takes), or a list of them for an ensemble; the weights'
        hashes make the backend version."""
        from ..classifiers import load_classifier
        from ..hub import resolve_model

        names = [name_or_path] if isinstance(name_or_path, str | os.PathLike) else list(name_or_path)
        members, versions = [], []
        for name in names:
            folder = resolve_model(name)
            digest = hashlib.sha256()  # weights and temperature: a retrained or recalibrated model is a new version
            for file in ("model.safetensors", "config.json"):
                digest.update((folder / file).read_bytes())
            members.append(load_classifier(folder, device=device))
            versions.append(f"{folder.name}-{digest.hexdigest()[:12]}")
        return cls(members, model_id="+".join(str(name) for name in names), levels=levels, cache=cache,
                   version="+".join(versions))

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The members' mean calibrated probabilities, columns in ``label_names`` order."""
        total = np.zeros((len(images), len(self.label_names)), dtype=np.float64)
        for member in self.classifiers:
            columns = [list(member.label_names).index(name) for name in self.label_names]
            total += member.predict_proba(list(images))[:, columns]
        return total / len(self.classifiers)

    @property
    def backend_id(self) -> str:
        return f"{self.name}:{self.version}"

    def items_for(self, checklist: Checklist) -> list[str]:
        """The graded items this backend answers for ``checklist``'s condition."""
        return [f"Recognisable: a classifier trained on real images gives {checklist.condition_name} a "
                f"probability of at least {level:g}" for level in self.levels]

    def _label_index(self, checklist: Checklist) -> int:
        names = self.label_names
        for candidate in (checklist.condition_id, checklist.condition_name):
            if candidate in names:
                return names.index(candidate)
        raise ValueError(f"The classifier {self.model_id or ''} knows {names}, not the condition "
                         f"{checklist.condition_id!r}; use a classifier trained on this catalog's classes.")

    def judge(self, image: Image.Image, checklist: Checklist) -> Verdict:
        return self.judge_batch([image], [checklist])[0]

    def judge_batch(self, images: Sequence[Image.Image], checklists: Sequence[Checklist]) -> list[Verdict]:
        indices = [self._label_index(checklist) for checklist in checklists]
        probabilities = self.predict_proba(images)
        verdicts = []
        for row, index, checklist in zip(probabilities, indices, checklists, strict=True):
            p = float(row[index])
            top = self.label_names[int(row.argmax())]
            scores = [int(p >= level) for level in self.levels]
            reasons = [f"p({checklist.condition_id}) = {p:.3f} {'>=' if passed else '<'} {level:g}"
                       f" (top class: {top} {float(row.max()):.3f})" for level, passed in zip(self.levels, scores)]
            verdicts.append(Verdict(scores=scores, rationales=reasons, condition_id=checklist.condition_id,
                                    checklist_version=checklist.version, backend=self.name,
                                    backend_version=self.version, items=self.items_for(checklist)))
        return verdicts
