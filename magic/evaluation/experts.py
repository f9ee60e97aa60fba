"""Expert labels of checklist items, and how well an evaluator agrees with them (Cohen's kappa per item).

The MAGIC paper checked its evaluator against dermatologists; this makes that check a feature. A clinician marks
each checklist item of an image as met (1) or not (0); ``expert_agreement`` runs an evaluator on the same images
and reports, per item position, Cohen's kappa and the raw agreement between evaluator and expert.

Labels file (``magic-expert-labels``, JSON Lines, one object per labelled image; hand-writable)::

    {"image": "cells/0001.png", "catalog": "pbc", "condition": "basophil", "scores": [1, 0, 1, 1, 0],
     "rater": "dr-a", "checklist_version": "pbc@1.0.0", "note": ""}

``image`` is a path relative to the labels file (or absolute); ``scores`` has one 0/1 per checklist item, in the
catalog's order; ``checklist_version`` records which wording the expert saw (a mismatch with the catalog now loaded
is reported, not ignored).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .base import Evaluator
from .verdict import Checklist

FORMAT = "magic-expert-labels"


@dataclass
class ExpertLabel:
    """One expert's 0/1 judgement of every checklist item of one image."""

    image: str
    catalog: str
    condition: str
    scores: list[int]
    rater: str = ""
    checklist_version: str = ""
    note: str = ""

    def __post_init__(self):
        if not self.scores or any(score not in (0, 1) for score in self.scores):
            raise ValueError(f"scores must be a list of 0/1 values, one per checklist item; got {self.scores!r} "
                             f"for {self.image}.")


def save_expert_labels(labels: list[ExpertLabel], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(label)) + "\n" for label in labels))
    return path


def load_expert_labels(path: str | os.PathLike) -> list[ExpertLabel]:
    """Read a labels file, with the line number of any malformed record in the error."""
    labels = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            fields = ExpertLabel.__dataclass_fields__
            labels.append(ExpertLabel(**{key: value for key, value in record.items() if key in fields}))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise ValueError(f"{path}, line {number}: not a {FORMAT} record ({error}).") from error
    if not labels:
        raise ValueError(f"{path} holds no expert labels.")
    return labels


@dataclass
class ExpertAgreement:
    """Evaluator vs expert, per checklist item position (1-based in reports)."""

    backend: str
    n_images: int
    kappa: list[float | None]  # Cohen's kappa per item; None where it is undefined (one side constant)
    agreement: list[float]  # share of images where both gave the same 0/1, per item
    overall_kappa: float | None  # over all items pooled
    version_mismatches: int = 0  # labels made on a different checklist wording than the one evaluated
    pairs: list[dict] = field(default_factory=list)  # per image: expert and evaluator scores

    def to_dict(self) -> dict:
        return asdict(self)


def _kappa(expert: list[int], evaluator: list[int]) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    if len(set(expert)) == 1 and len(set(evaluator)) == 1:
        return None  # both constant: chance agreement is 1 and kappa is undefined
    value = float(cohen_kappa_score(expert, evaluator))
    return None if math.isnan(value) else value


def agreement_from_pairs(pairs: list[dict], backend: str = "", version_mismatches: int = 0) -> ExpertAgreement:
    """Kappa and agreement from ``[{"expert": [...], "evaluator": [...]}, ...]`` (same number of items each)."""
    if not pairs:
        raise ValueError("No labelled images to compare.")
    n_items = len(pairs[0]["expert"])
    if any(len(p["expert"]) != n_items or len(p["evaluator"]) != n_items for p in pairs):
        raise ValueError("Every image must have the same number of checklist items from expert and evaluator.")
    columns = [([p["expert"][i] for p in pairs], [p["evaluator"][i] for p in pairs]) for i in range(n_items)]
    pooled_expert = [score for expert, _ in columns for score in expert]
    pooled_evaluator = [score for _, evaluator in columns for score in evaluator]
    return ExpertAgreement(
        backend=backend, n_images=len(pairs),
        kappa=[_kappa(expert, evaluator) for expert, evaluator in columns],
        agreement=[sum(a == b for a, b in zip(expert, evaluator)) / len(pairs) for expert, evaluator in columns],
        overall_kappa=_kappa(pooled_expert, pooled_evaluator), version_mismatches=version_mismatches, pairs=pairs)


def expert_agreement(evaluator: Evaluator, labels: list[ExpertLabel], root: str | os.PathLike = ".") -> ExpertAgreement:
    """Judge every labelled image with ``evaluator`` and compare with the experts, item by item."""
    root = Path(root)
    pairs, mismatches = [], 0
    for label in labels:
        checklist = Checklist.from_catalog(label.catalog, label.condition)
        if len(checklist.items) != len(label.scores):
            raise ValueError(f"{label.image}: {len(label.scores)} expert scores for a {len(checklist.items)}-item "
                             f"checklist ({checklist.version}).")
        mismatches += bool(label.checklist_version) and label.checklist_version != checklist.version
        path = Path(label.image) if Path(label.image).is_absolute() else root / label.image
        verdict = evaluator.evaluate(str(path), checklist)
        pairs.append({"image": label.image, "condition": label.condition, "rater": label.rater,
                      "expert": list(label.scores), "evaluator": list(verdict.scores)})
    return agreement_from_pairs(pairs, evaluator.backend_id, mismatches)


def format_agreement(result: ExpertAgreement) -> str:
    """A Markdown table: one row per item position, plus the pooled kappa."""
    def show(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.2f}"

    rows = "\n".join(f"| {i} | {show(k)} | {a:.0%} |" for i, (k, a) in enumerate(zip(result.kappa, result.agreement),
                                                                             start=1))
    note = (f"\n\n{result.version_mismatches} label(s) were made on another checklist wording."
            if result.version_mismatches else "")
    return (f"Evaluator `{result.backend}` vs expert on {result.n_images} image(s); pooled Cohen's kappa "
            f"{show(result.overall_kappa)}.\n\n| item | Cohen's kappa | agreement |\n|---|---|---|\n{rows}{note}")
