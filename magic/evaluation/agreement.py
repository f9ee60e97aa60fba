"""How well an evaluator agrees with ground truth on real labelled images.

Real images of condition C should meet C's checklist and should not meet the checklists of the other conditions D
of the same catalog. Reported: the item pass rate on the own checklist, the item pass rate on other checklists, the
share of images meeting >= 3 items (the paper's threshold) of each, and how often the own checklist scores strictly
highest, and the share of real images the evaluator refused as "not a valid image" (all zeros), overall and per
condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..catalog import Catalog
from .base import Evaluator
from .verdict import Checklist


@dataclass
class AgreementResult:
    """Agreement of one evaluator with the labels of one dataset split."""

    backend: str
    dataset: str
    split: str
    catalog: str
    n_images: int
    own_pass_rate: float
    other_pass_rate: float
    own_meets3: float
    other_meets3: float
    own_highest: float
    invalid_rate: float
    seconds: float
    per_condition: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def checklist_agreement(evaluator: Evaluator, dataset, catalog: Catalog, dataset_name: str = "", split: str = "test",
                        per_class: int = 0, batch_size: int = 64, seed: int = 0,
                        progress: Callable[[int, int], None] | None = None) -> AgreementResult:
    """Judge every image (or ``per_class`` random ones per class) against every condition's checklist."""
    names = dataset.features["label"].names
    conditions = [catalog.get(name).id for name in names]
    checklists = [Checklist.from_catalog(catalog, condition) for condition in conditions]
    labels = np.asarray(dataset["label"])
    indices = np.arange(len(labels))
    if per_class:
        rng = np.random.default_rng(seed)
        indices = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:per_class]
                                  for k in range(len(names))])
        indices.sort()
    scores = np.zeros((len(indices), len(names), len(checklists[0].items)), dtype=np.int8)  # (I, C, items)
    invalid = np.zeros(len(indices), dtype=bool)  # judged "not a valid image" (all zeros) on the own checklist
    started = time.time()
    for first in range(0, len(indices), batch_size):
        chunk = indices[first:first + batch_size]
        images = [image.convert("RGB") for image in dataset.select(chunk.tolist())["image"]]
        pairs_images = [image for image in images for _ in checklists]
        pairs_checklists = [checklist for _ in images for checklist in checklists]
        verdicts = evaluator.evaluate_batch(pairs_images, pairs_checklists)
        for offset, verdict in enumerate(verdicts):
            row, column = first + offset // len(checklists), offset % len(checklists)
            scores[row, column] = verdict.scores
            if column == labels[indices[row]]:
                invalid[row] = not verdict.valid_image
        if progress:
            progress(min(first + batch_size, len(indices)), len(indices))
    truth = labels[indices]
    own = np.eye(len(names), dtype=bool)[truth]  # (I, C)
    item_rate = scores.mean(-1)  # (I, C)
    total = scores.sum(-1)  # (I, C)
    others_max = np.where(own, -1, total).max(1)
    own_total = total[own]

    def summary(mask_images: np.ndarray) -> dict[str, float]:
        own_m, other_m = own[mask_images], ~own[mask_images]
        return {
            "n": int(mask_images.sum()),
            "own_pass_rate": float(item_rate[mask_images][own_m].mean()),
            "other_pass_rate": float(item_rate[mask_images][other_m].mean()),
            "own_meets3": float((total[mask_images][own_m] >= 3).mean()),
            "other_meets3": float((total[mask_images][other_m] >= 3).mean()),
            "own_highest": float((own_total[mask_images] > others_max[mask_images]).mean()),
            "invalid_rate": float(invalid[mask_images].mean()),
        }

    overall = summary(np.ones(len(indices), dtype=bool))
    per_condition = {conditions[k]: summary(truth == k) for k in range(len(names)) if (truth == k).any()}
    return AgreementResult(backend=evaluator.backend_id, dataset=dataset_name, split=split, catalog=catalog.name,
                           n_images=overall["n"], own_pass_rate=overall["own_pass_rate"],
                           other_pass_rate=overall["other_pass_rate"], own_meets3=overall["own_meets3"],
                           other_meets3=overall["other_meets3"], own_highest=overall["own_highest"],
                           invalid_rate=overall["invalid_rate"],
                           seconds=round(time.time() - started, 1), per_condition=per_condition)


def format_table(results: list[AgreementResult]) -> str:
    """A plain-text table: one block per dataset, one row per condition plus the overall row."""
    lines = []
    header = f"{'condition':<24} {'n':>5} {'own pass':>9} {'other pass':>11} {'own>=3':>7} {'other>=3':>9} " \
             f"{'own top':>8} {'invalid':>8}"
    for result in results:
        lines.append(f"{result.backend} on {result.dataset} [{result.split}] ({result.catalog} checklists)")
        lines.append(header)
        rows = list(result.per_condition.items()) + [("ALL", {
            "n": result.n_images, "own_pass_rate": result.own_pass_rate, "other_pass_rate": result.other_pass_rate,
            "own_meets3": result.own_meets3, "other_meets3": result.other_meets3, "own_highest": result.own_highest,
            "invalid_rate": result.invalid_rate})]
        for name, row in rows:
            lines.append(f"{name:<24} {row['n']:>5} {row['own_pass_rate']:>9.1%} {row['other_pass_rate']:>11.1%} "
                         f"{row['own_meets3']:>7.1%} {row['other_meets3']:>9.1%} {row['own_highest']:>8.1%} "
                         f"{row['invalid_rate']:>8.1%}")
        lines.append("")
    return "\n".join(lines)
