"""Build training sets for the experiment: the real subset, extra real images, real + added images, and the
per-image sampling weights that give the added images a set share of every batch."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np

from ..data.datasets import class_names, labels_of
from ..data.subsets import imbalanced_subset, k_shot

#: Columns of every training set the harness builds: the image, its label, where it came from (``real``,
#: ``extra-real`` or ``synthetic:SOURCE``) and its row in that origin (real rows: the row of the real train split).
ORIGIN_COLUMN = "origin"
INDEX_COLUMN = "origin_index"


def harness_features(names: list[str]) -> datasets.Features:
    """The features every part of a harness training set shares, so parts concatenate."""
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                              ORIGIN_COLUMN: datasets.Value("string"), INDEX_COLUMN: datasets.Value("int64")})


def tag(dataset: datasets.Dataset, origin: str, names: list[str] | None = None,
        indices: Sequence[int] | None = None) -> datasets.Dataset:
    """``dataset`` reduced to image + label, with its origin and row indices, labels mapped onto ``names`` by
    class name (the real data's order). Raises ValueError when the class names differ."""
    own = class_names(dataset)
    names = list(names or own)
    if sorted(own) != sorted(names):
        raise ValueError(f"{origin}: its classes {own} differ from the real data's {names}; a synthetic dataset "
                         "must use the real class names.")
    part = dataset.select_columns(["image", "label"])
    if own != names:
        mapping = {index: names.index(name) for index, name in enumerate(own)}
        labels = [mapping[label] for label in labels_of(part)]
        part = part.remove_columns("label").add_column("label", labels)
    part = part.add_column(ORIGIN_COLUMN, [origin] * len(part))
    part = part.add_column(INDEX_COLUMN, list(indices) if indices is not None else list(range(len(part))))
    features = harness_features(names)
    return part if part.features == features else part.cast(features)


def real_subset(train: datasets.Dataset, seed: int, imbalanced: str = "", k: int = 0, total: int = 500,
                min_per_class: int = 5) -> datasets.Dataset:
    """The real training set of one seed, tagged ``real`` with its rows in ``train``: an imbalanced profile,
    k-shot, or the whole split."""
    tagged = tag(train, "real")
    if k:
        return k_shot(tagged, k, seed=seed)
    if imbalanced:
        return imbalanced_subset(tagged, imbalanced, total=total, min_per_class=min_per_class, seed=seed)
    return tagged


def extra_real(train: datasets.Dataset, base: datasets.Dataset, per_class: int, seed: int) -> datasets.Dataset:
    """Up to ``per_class`` more real images of each class from ``train`` rows not in ``base``, tagged
    ``extra-real``. Draws are nested: a larger ``per_class`` keeps the smaller draw's images."""
    taken = np.asarray(base[INDEX_COLUMN], dtype=np.int64)
    labels = np.asarray(labels_of(train))
    rng = np.random.default_rng([seed, 7919])
    chosen = []
    for label in range(len(class_names(train))):
        pool = np.setdiff1d(np.flatnonzero(labels == label), taken)
        chosen.append(rng.permutation(pool)[:per_class])
    rows = np.sort(np.concatenate(chosen)).tolist() if chosen else []
    return tag(train.select(rows), "extra-real", indices=rows)


def first_per_class(dataset: datasets.Dataset, per_class: int, origin: str) -> datasets.Dataset:
    """The first ``per_class`` rows of each class of an (already tagged) dataset; raises ValueError when a
    class has fewer."""
    labels = np.asarray(labels_of(dataset))
    names = class_names(dataset)
    rows = []
    for label, name in enumerate(names):
        pool = np.flatnonzero(labels == label)
        if len(pool) < per_class:
            raise ValueError(f"{origin} has {len(pool)} images of {name!r}, fewer than the {per_class} asked for; "
                             "generate more or lower synthetic_per_class.")
        rows.append(pool[:per_class])
    return dataset.select(np.sort(np.concatenate(rows)).tolist())


def combine(real: datasets.Dataset, added: datasets.Dataset | None) -> datasets.Dataset:
    """Real rows followed by added rows, one dataset."""
    if added is None or len(added) == 0:
        return real
    return datasets.concatenate_datasets([real, added])


def mixing_weights(labels: Sequence[int], added: Sequence[bool], share: float, exponent: float = 0.0) -> np.ndarray:
    """Per-image sampling weights under which added images make up ``share`` of the draws in expectation.

    Within each part (real, added) an image of a class with ``count`` images of that part weighs
    ``count ** exponent`` (0: uniform; -1: every class of the part equally often). The weights sum to 1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    added = np.asarray(added, dtype=bool)
    if labels.shape != added.shape:
        raise ValueError(f"labels ({labels.shape}) and added ({added.shape}) must have the same length.")
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must lie in (0, 1), got {share}.")
    if added.all() or not added.any():
        raise ValueError("Mixing needs both real and added images.")
    weights = np.zeros(len(labels), dtype=np.float64)
    for part, part_share in ((~added, 1.0 - share), (added, share)):
        counts = np.bincount(labels[part])
        part_weights = counts[labels[part]].astype(np.float64) ** exponent
        weights[part] = part_share * part_weights / part_weights.sum()
    return weights
