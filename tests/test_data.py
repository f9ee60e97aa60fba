from collections import Counter

import pytest

from magic.data import (
    DatasetFormatError,
    SubsetError,
    class_names,
    imbalanced_subset,
    k_shot,
    labels_of,
    load_image_dataset,
    scale_profile,
    subset_from_counts,
)
from tests.conftest import TINY_CLASSES, TINY_COUNTS


def test_load_local_folder_gives_splits_and_class_names(tiny_dataset):
    data = load_image_dataset(tiny_dataset)
    assert set(data) == {"train", "validation", "test"}
    assert class_names(data) == TINY_CLASSES
    assert len(data["train"]) == sum(TINY_COUNTS["train"])
    assert data["train"][0]["image"].size == (32, 32)


def test_load_one_split_and_unknown_split_is_a_clear_error(tiny_dataset):
    assert len(load_image_dataset(tiny_dataset, split="test")) == sum(TINY_COUNTS["test"])
    with pytest.raises(DatasetFormatError, match="no split 'holdout'"):
        load_image_dataset(tiny_dataset, split="holdout")


def test_file_instead_of_folder_is_refused(tiny_dataset):
    with pytest.raises(DatasetFormatError, match="is a file"):
        load_image_dataset(next((tiny_dataset / "data").iterdir()))


def test_k_shot_draws_k_per_class_reproducibly(tiny_dataset):
    train = load_image_dataset(tiny_dataset, split="train")
    first, again, other = k_shot(train, 5, seed=1), k_shot(train, 5, seed=1), k_shot(train, 5, seed=2)
    assert Counter(labels_of(first)) == {0: 5, 1: 5, 2: 5}
    assert first["source_file"] == again["source_file"]
    assert first["source_file"] != other["source_file"]


def test_k_shot_larger_than_a_class_names_the_class(tiny_dataset):
    train = load_image_dataset(tiny_dataset, split="train")
    with pytest.raises(SubsetError, match="'cross' but the dataset has only 6"):
        k_shot(train, 7)


def test_scale_profile_sums_exactly_and_keeps_minimum():
    counts = scale_profile({"a": 8593, "b": 79, "c": 0}, total=100, min_per_class=3)
    assert sum(counts.values()) == 100
    # 3 each, then the other 91 split 90.17 : 0.83 : 0 with the largest remainders rounded up
    assert counts == {"a": 93, "b": 4, "c": 3}


def test_matek19_profile_on_pbc_names_is_highly_imbalanced():
    counts = scale_profile(__import__("magic.data", fromlist=["IMBALANCE_PROFILES"]).IMBALANCE_PROFILES["matek19"],
                           total=500, min_per_class=5)
    assert sum(counts.values()) == 500
    assert counts["neutrophil"] > 20 * counts["basophil"]
    assert min(counts.values()) == 5


def test_imbalanced_subset_follows_profile(tiny_dataset):
    train = load_image_dataset(tiny_dataset, split="train")
    subset = imbalanced_subset(train, {"disc": 1, "square": 10, "cross": 0}, total=24, min_per_class=2, seed=0)
    counts = Counter(labels_of(subset))
    assert counts == {0: 4, 1: 18, 2: 2}
    assert imbalanced_subset(train, {"disc": 1, "square": 10, "cross": 0}, total=24, min_per_class=2,
                             seed=0)["source_file"] == subset["source_file"]


def test_subset_rejects_unknown_class_names(tiny_dataset):
    train = load_image_dataset(tiny_dataset, split="train")
    with pytest.raises(SubsetError, match="Unknown classes"):
        subset_from_counts(train, {"triangle": 1})
