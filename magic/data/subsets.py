"""Reproducible subsets of a labelled dataset: k-shot per class and small, imbalanced count profiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets
import numpy as np

from .datasets import class_names, labels_of

#: Class proportions of the Matek-19 AML cytomorphology dataset (Matek et al. 2019) that CytoDiff used,
#: mapped onto the PBC class names: segmented + band neutrophils -> neutrophil; typical + atypical
#: lymphocytes -> lymphocyte; promyelocytes, myelocytes, metamyelocytes, promyelocytes (bilobed) -> ig.
#: Matek-19 has no platelets; they get the minimum count when a profile is scaled.
IMBALANCE_PROFILES: dict[str, dict[str, float]] = {
    "matek19": {
        "neutrophil": 8593,
        "lymphocyte": 3948,
        "monocyte": 1789,
        "eosinophil": 424,
        "ig": 145,
        "basophil": 79,
        "erythroblast": 78,
        "platelet": 0,
    },
}


class SubsetError(ValueError):
    """A subset asks for more images of a class than the dataset holds, or names unknown classes."""


def _indices_by_class(dataset: datasets.Dataset) -> list[np.ndarray]:
    labels = np.asarray(labels_of(dataset))
    return [np.flatnonzero(labels == index) for index in range(len(class_names(dataset)))]


def subset_from_counts(
    dataset: datasets.Dataset, counts: Mapping[str, int] | Sequence[int], seed: int = 0
) -> datasets.Dataset:
    """Draw exactly ``counts[class]`` images of each class, without replacement, reproducibly by ``seed``.

    ``counts`` maps class names to counts (classes left out get 0) or lists one count per class index.
    The result keeps the dataset's order within the drawn indices, so the same seed gives the same subset.
    """
    names = class_names(dataset)
    if isinstance(counts, Mapping):
        unknown = sorted(set(counts) - set(names))
        if unknown:
            raise SubsetError(f"Unknown classes {unknown}; the dataset's classes are {names}.")
        wanted = [int(counts.get(name, 0)) for name in names]
    else:
        if len(counts) != len(names):
            raise SubsetError(f"Got {len(counts)} counts for {len(names)} classes {names}.")
        wanted = [int(count) for count in counts]
    rng = np.random.default_rng(seed)
    chosen = []
    for name, count, pool in zip(names, wanted, _indices_by_class(dataset)):
        if count < 0:
            raise SubsetError(f"Count for {name!r} is negative ({count}).")
        if count > len(pool):
            raise SubsetError(f"Asked for {count} images of {name!r} but the dataset has only {len(pool)}.")
        chosen.append(rng.choice(pool, size=count, replace=False))
    return dataset.select(np.sort(np.concatenate(chosen)).tolist())


def k_shot(dataset: datasets.Dataset, k: int, seed: int = 0) -> datasets.Dataset:
    """``k`` images of every class, drawn reproducibly by ``seed``."""
    return subset_from_counts(dataset, [k] * len(class_names(dataset)), seed=seed)


def scale_profile(profile: Mapping[str, float], total: int, min_per_class: int = 1) -> dict[str, int]:
    """Scale class proportions to integer counts summing to ``total``, each at least ``min_per_class``.

    Rounding follows the largest-remainder method so the sum is exact.
    """
    names = list(profile)
    floor_total = min_per_class * len(names)
    if total < floor_total:
        raise SubsetError(f"total={total} is below min_per_class * classes = {floor_total}.")
    weights = np.asarray([max(float(profile[name]), 0.0) for name in names])
    if weights.sum() <= 0:
        raise SubsetError("A profile needs at least one positive proportion.")
    shares = weights / weights.sum() * (total - floor_total)
    counts = np.floor(shares).astype(int)
    remainder_order = np.argsort(-(shares - counts), kind="stable")
    counts[remainder_order[: (total - floor_total) - counts.sum()]] += 1
    return {name: int(count) + min_per_class for name, count in zip(names, counts)}


def imbalanced_subset(
    dataset: datasets.Dataset,
    profile: str | Mapping[str, float] = "matek19",
    total: int = 500,
    min_per_class: int = 5,
    seed: int = 0,
) -> datasets.Dataset:
    """A small, highly imbalanced subset whose class counts follow ``profile`` scaled to ``total`` images.

    ``profile`` is a name from IMBALANCE_PROFILES or a mapping of class name to proportion.
    """
    if isinstance(profile, str):
        if profile not in IMBALANCE_PROFILES:
            raise SubsetError(f"Unknown profile {profile!r}; known: {sorted(IMBALANCE_PROFILES)}.")
        profile = IMBALANCE_PROFILES[profile]
    return subset_from_counts(dataset, scale_profile(profile, total, min_per_class), seed=seed)


def balance_exponent(balance: str) -> float:
    """Exponent of the class count in a per-image weight: sampler -1, sqrt-sampler -0.5, otherwise 0."""
    return {"sampler": -1.0, "sqrt-sampler": -0.5}.get(balance, 0.0)
