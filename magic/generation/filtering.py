"""Keep only the generated images a judge accepts: a classifier's probability of the class an image was generated
for, or an evaluator's checklist score for that class (MAGIC's "meets >= 3 of 5 criteria").

The judge should know the real images, not the generator: a classifier trained on the real training split, or an
evaluator. Scores are cached per image (by job id) next to the images, so a rerun or a second experiment with the
same filter judges nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SCORES_FOLDER = "filter-scores"


@dataclass
class FilterConfig:
    """Which judge decides whether a generated image is kept (neither `classifier` nor `evaluator`: keep all)."""

    classifier: str = field(default="", metadata={
        "help": "Image classifier (folder, embedded id or Hub id) trained on real images of the same classes; an "
                "image is kept when its probability of the class it was generated for is >= min_confidence."})
    min_confidence: float = field(default=0.5, metadata={
        "help": "classifier only: the least probability of the intended class an image must get (0-1)."})
    evaluator: str = field(default="", metadata={
        "help": "Evaluator spec (embedded, openai:MODEL?base_url=..., transformers:ID); an image is kept when it "
                "meets >= min_score items of its class's checklist in `catalog`."})
    catalog: str = field(default="", metadata={
        "help": "evaluator only: the condition catalog whose checklists judge the images (e.g. pbc); its condition "
                "ids must be the class names."})
    min_score: int = field(default=3, metadata={
        "help": "evaluator only: checklist items an image must meet (MAGIC counts >= 3 of 5 as acceptable)."})
    batch_size: int = field(default=64, metadata={"help": "Images judged per call."})
    device: str = field(default="cpu", metadata={"help": "classifier only: cpu, cuda or cuda:N."})

    def __post_init__(self):
        if self.classifier and self.evaluator:
            raise ValueError("A filter takes a `classifier` or an `evaluator`, not both.")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}.")
        if self.evaluator and not self.catalog:
            raise ValueError(f"The evaluator filter {self.evaluator!r} needs `catalog` (e.g. pbc): the checklists "
                             "it judges against.")
        if not isinstance(self.min_score, int) or self.min_score < 0:
            raise ValueError(f"min_score must be an integer >= 0, got {self.min_score!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}.")

    @property
    def enabled(self) -> bool:
        return bool(self.classifier or self.evaluator)

    def judge_settings(self) -> dict:
        """The settings that decide each image's score and verdict (not how fast they are computed)."""
        if self.classifier:
            return {"classifier": self.classifier, "min_confidence": self.min_confidence}
        if self.evaluator:
            return {"evaluator": self.evaluator, "catalog": self.catalog, "min_score": self.min_score}
        return {}

    def scorer_settings(self) -> dict:
        """The settings that decide each image's score (the judge, not the threshold that turns it into a verdict)."""
        return {key: value for key, value in self.judge_settings().items()
                if key not in ("min_confidence", "min_score")}

    def describe(self) -> str:
        if self.classifier:
            return f"classifier {self.classifier}, p(intended class) >= {self.min_confidence:g}"
        if self.evaluator:
            return f"evaluator {self.evaluator}, >= {self.min_score} items of the {self.catalog} checklist"
        return "none"

    def to_dict(self) -> dict:
        return asdict(self)


class ImageFilter:
    """Scores images for the class each was generated for and says which to keep."""

    def __init__(self, config: FilterConfig):
        if not config.enabled:
            raise ValueError("This FilterConfig names no judge: set `classifier` or `evaluator`.")
        self.config = config
        self._judge = None

    @property
    def score_key(self) -> str:
        """What a score depends on: the judge (a classifier's weights hashed, so a retrained one is not mistaken
        for the old; an evaluator's catalog version and items)."""
        judge = self.config.scorer_settings()
        if self.config.classifier:
            from ..hub import resolve_model

            digest = hashlib.sha256()
            for path in sorted(resolve_model(self.config.classifier).glob("*.safetensors")):
                digest.update(path.read_bytes())
            judge["weights_sha256"] = digest.hexdigest()
        else:  # an edited catalog (its items, hence its version) is another checklist
            from ..catalog import load_catalog

            catalog = load_catalog(self.config.catalog)
            judge["backend"] = self._load().backend_id  # names the evaluator's weights or model
            judge["catalog_version"] = f"{catalog.name}@{catalog.version}"
            judge["items_sha256"] = hashlib.sha256(repr((catalog.criteria, catalog.conditions)).encode()).hexdigest()
        return hashlib.sha256(json.dumps(judge, sort_keys=True).encode()).hexdigest()[:16]

    def _load(self):
        if self._judge is None:
            if self.config.classifier:
                from ..classifiers import load_classifier

                self._judge = load_classifier(self.config.classifier, device=self.config.device)
            else:
                from ..evaluation import load_evaluator

                self._judge = load_evaluator(self.config.evaluator)
        return self._judge

    def scores(self, images: Sequence[Image.Image], labels: Sequence[str]) -> np.ndarray:
        """Each image's score for its label: the classifier's probability of it, or the number of checklist items
        met."""
        if len(images) != len(labels):
            raise ValueError(f"Got {len(images)} images for {len(labels)} labels.")
        judge = self._load()
        out = np.zeros(len(images), dtype=np.float64)
        if self.config.classifier:
            names = list(judge.label_names)
            unknown = sorted(set(labels) - set(names))
            if unknown:
                raise ValueError(f"The filter classifier {self.config.classifier} does not know the classes {unknown} "
                                 f"(it knows {names}); filter with a classifier trained on these classes.")
            for start in range(0, len(images), self.config.batch_size):
                chunk = [image.convert("RGB") for image in images[start:start + self.config.batch_size]]
                probabilities = judge.predict_proba(chunk, batch_size=self.config.batch_size)
                columns = [names.index(label) for label in labels[start:start + self.config.batch_size]]
                out[start:start + len(chunk)] = probabilities[np.arange(len(chunk)), columns]
            return out
        from ..evaluation.verdict import Checklist

        checklists = {label: Checklist.from_catalog(self.config.catalog, label) for label in sorted(set(labels))}
        for start in range(0, len(images), self.config.batch_size):
            chunk = list(images[start:start + self.config.batch_size])
            verdicts = judge.evaluate_batch(chunk, [checklists[label] for label in
                                                    labels[start:start + self.config.batch_size]])
            out[start:start + len(chunk)] = [verdict.score for verdict in verdicts]
        return out

    def keep(self, scores: np.ndarray) -> np.ndarray:
        """Which scores pass the threshold."""
        threshold = self.config.min_confidence if self.config.classifier else self.config.min_score
        return np.asarray(scores) >= threshold


def cached_scores(image_filter: ImageFilter, ids: Sequence[str], labels: Sequence[str],
                  load_images: Callable[[list[int]], list[Image.Image]], cache_folder: str | os.PathLike
                  ) -> np.ndarray:
    """Scores of the rows named by ``ids`` (unique, e.g. job ids) for their ``labels``: earlier ones read from
    ``cache_folder/filter-scores/KEY.json``, the rest judged (``load_images(positions)`` gives those rows'
    images) and added to that file."""
    if len(set(ids)) != len(ids):
        raise ValueError("Row ids must be unique to cache their filter scores.")
    path = Path(cache_folder) / SCORES_FOLDER / f"{image_filter.score_key}.json"
    cached = json.loads(path.read_text())["scores"] if path.is_file() else {}
    missing = [position for position, row_id in enumerate(ids) if row_id not in cached]
    if missing:
        chunk = load_images(missing)
        new = image_filter.scores(chunk, [labels[position] for position in missing])
        cached.update({ids[position]: float(score) for position, score in zip(missing, new)})
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps({"judge": image_filter.config.scorer_settings(), "scores": cached},
                                      indent=0) + "\n")
        os.replace(partial, path)
    return np.asarray([cached[row_id] for row_id in ids], dtype=np.float64)


def row_ids(dataset) -> list[str]:
    """One id per row to cache its score under: the generated dataset's job ids, else ``row-N``."""
    return list(dataset["job_id"]) if "job_id" in dataset.column_names else [f"row-{i}" for i in range(len(dataset))]


def kept_per_class(labels: Sequence[str], kept: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per class, how many images were judged and how many the judge kept (``kept``: one bool per image)."""
    labels = np.asarray(labels)
    kept = np.asarray(kept, dtype=bool)
    return {name: {"generated": int((labels == name).sum()), "kept": int((kept & (labels == name)).sum())}
            for name in names}


def filter_dataset(data: str | os.PathLike, output: str | os.PathLike, config: FilterConfig, split: str = "train",
                   shard_size: int = 256) -> dict:
    """Write the rows of ``data``'s ``split`` (a generated dataset folder or Hub id) that ``config``'s judge keeps
    to ``output`` as a Hub-shaped dataset: every column of the source plus ``filter_score``, in source order,
    with a card that names the judge and the counts kept per class. Scores are cached in ``output``, so a rerun
    (or another threshold with the same judge) judges nothing again. Returns the counts."""
    from ..data.datasets import class_names, load_image_dataset

    output = Path(output)
    if Path(data).exists() and Path(data).resolve() == output.resolve():
        raise ValueError(f"Write the filtered dataset to a new folder, not over its source {data}.")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    image_filter = ImageFilter(config)
    rows = load_image_dataset(data, split=split)
    names = class_names(rows)
    labels = [names[label] for label in rows["label"]]
    scores = cached_scores(image_filter, row_ids(rows), labels, lambda positions: rows.select(positions)["image"],
                           output)
    keep = image_filter.keep(scores)
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise ValueError(f"The judge ({config.describe()}) kept none of the {len(rows)} images; lower the threshold "
                         "or check that the judge was trained on these classes.")
    subset = rows.select(kept.tolist())
    subset = subset.add_column("filter_score", scores[kept].tolist())
    folder = output / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.parquet"):
        stale.unlink()
    shards = -(-len(subset) // shard_size)
    for index in range(shards):
        part = subset.select(range(index * shard_size, min((index + 1) * shard_size, len(subset))))
        part.to_parquet(folder / f"{split}-{index:05d}-of-{shards:05d}.parquet")
    counts = kept_per_class(labels, keep, names)
    _write_filtered_card(output, data, split, config, counts)
    return {"output": str(output), "judged": len(rows), "kept": len(kept), "per_class": counts}


def _write_filtered_card(output: Path, data: str | os.PathLike, split: str, config: FilterConfig,
                         counts: dict) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    source_card = Path(data) / "README.md"
    metadata, body = DatasetCardData(), ""
    if source_card.is_file():
        card = DatasetCard.load(source_card)
        metadata, body = card.data, card.text.strip()
    metadata.pretty_name = output.name
    table = "\n".join(f"| {name} | {count['generated']} | {count['kept']} |" for name, count in counts.items())
    content = (f"---\n{metadata.to_yaml()}\n---\n\n# {output.name}\n\n"
               f"The `{split}` images of `{data}` that a judge accepts: {config.describe()} "
               f"(settings: {json.dumps(config.judge_settings())}). Each row keeps its provenance columns and adds "
               "`filter_score` (the classifier's probability of the row's class, or the checklist items met).\n\n"
               f"| class | judged | kept |\n|---|---|---|\n{table}\n")
    if body:
        content += "\n## The source dataset's card\n" + ("\n" + body).replace("\n# ", "\n### ") + "\n"
    path = output / "README.md"
    DatasetCard(content).save(path)
    return path
