"""Load Hub-shaped image datasets (a local folder or a Hub id) and wrap them for PyTorch."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import torch
from PIL import Image

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


class DatasetFormatError(ValueError):
    """A dataset lacks the ``image`` / ``label`` columns or the ClassLabel names the project needs."""


def load_image_dataset(name_or_path: str | os.PathLike, split: str | None = None, **kwargs):
    """Load an image-classification dataset by local folder or Hub id.

    Returns a ``datasets.DatasetDict`` (all splits) or, when ``split`` is given, one ``datasets.Dataset``.
    The dataset must have an ``image`` column and a ``label`` ClassLabel column.
    """
    source = str(name_or_path)
    if Path(source).exists() and not Path(source).is_dir():
        raise DatasetFormatError(f"{source} is a file; give the dataset's folder (with data/*.parquet) or a Hub id.")
    try:
        loaded = datasets.load_dataset(source, split=split, **kwargs)
    except ValueError as error:
        if split is not None and "Unknown split" in str(error):
            available = list(datasets.get_dataset_split_names(source))
            raise DatasetFormatError(f"{source} has no split {split!r}; its splits are {available}.") from error
        raise
    for part in loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]:
        check_image_dataset(part, source)
    return loaded


def check_image_dataset(dataset: datasets.Dataset, source: str = "dataset") -> None:
    """Raise DatasetFormatError unless ``dataset`` has an Image column and a ClassLabel label column."""
    features = dataset.features
    if IMAGE_COLUMN not in features or not isinstance(features[IMAGE_COLUMN], datasets.Image):
        raise DatasetFormatError(f"{source} needs an {IMAGE_COLUMN!r} column of type Image; it has {list(features)}.")
    if LABEL_COLUMN not in features or not isinstance(features[LABEL_COLUMN], datasets.ClassLabel):
        raise DatasetFormatError(
            f"{source} needs a {LABEL_COLUMN!r} column of type ClassLabel (with class names); it has {list(features)}."
        )


def class_names(dataset: datasets.Dataset | datasets.DatasetDict) -> list[str]:
    """The class names of a dataset's ``label`` ClassLabel, in label-index order."""
    if isinstance(dataset, datasets.DatasetDict):
        dataset = next(iter(dataset.values()))
    check_image_dataset(dataset)
    return list(dataset.features[LABEL_COLUMN].names)


def labels_of(dataset: datasets.Dataset) -> list[int]:
    """All label indices of a dataset, read without decoding images."""
    return list(dataset[LABEL_COLUMN])


class TorchImageDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` seen as (transformed image tensor, label) pairs for a DataLoader; the rows marked in
    ``alternate_rows`` go through ``alternate`` instead of ``transform``."""

    def __init__(self, dataset: datasets.Dataset, transform: Callable[[Image.Image], torch.Tensor],
                 alternate: Callable[[Image.Image], torch.Tensor] | None = None,
                 alternate_rows: Sequence[bool] | None = None):
        check_image_dataset(dataset)
        if (alternate is None) != (alternate_rows is None):
            raise ValueError("Give both alternate (a transform) and alternate_rows (one bool per row), or neither.")
        if alternate_rows is not None and len(alternate_rows) != len(dataset):
            raise ValueError(f"alternate_rows needs one bool per row ({len(dataset)}), got {len(alternate_rows)}.")
        self.dataset = dataset
        self.transform = transform
        self.alternate = alternate
        self.alternate_rows = [bool(flag) for flag in alternate_rows] if alternate_rows is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.dataset[int(index)]
        alternate = self.alternate_rows is not None and self.alternate_rows[int(index)]
        transform = self.alternate if alternate else self.transform
        return transform(row[IMAGE_COLUMN].convert("RGB")), int(row[LABEL_COLUMN])
