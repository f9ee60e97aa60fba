"""Run a declared augmentation experiment: real-only vs real + synthetic vs controls, over seeds, tested on real
images only, resumable, with a JSON + markdown + plot report."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import numpy as np

from ..classifiers.evaluate import evaluate_classifier
from ..classifiers.train import TrainConfig, resolve_device, train_classifier
from ..data.datasets import DatasetFormatError, class_names, labels_of, load_image_dataset
from ..data.subsets import balance_exponent
from ..data.transforms import AugmentConfig
from .config import (
    CLASSIC,
    EXTRA_REAL,
    REAL_ONLY,
    SYNTHETIC,
    AugmentExperimentConfig,
    ConfigError,
    RunSpec,
    SyntheticSource,
    load_config,
    plan_runs,
)
from .mixing import (
    INDEX_COLUMN,
    ORIGIN_COLUMN,
    combine,
    extra_real,
    first_per_class,
    mixing_weights,
    real_subset,
)
from .report import markdown_report, plot_macro_f1, summarise, target_check
from .synthetic import KEPT_COLUMN, source_pool

PLOT_NAME = "macro_f1_vs_synthetic.png"


def _write_json(path: Path, values: dict) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(values, indent=1) + "\n")
    os.replace(partial, path)  # a result appears whole or not at all


def _plain(values):
    return json.loads(json.dumps(values))


def _device_name(device: str) -> str:
    import torch

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return f"{resolved} ({torch.cuda.get_device_name(resolved)})"
    return str(resolved)


def real_steps(train: TrainConfig, real_images: int) -> int:
    """Optimiser steps of a real-only run: ``epochs`` passes over ``real_images`` (as train_classifier counts
    them), capped by ``max_steps``."""
    per_epoch = real_images // train.batch_size if real_images > train.batch_size else 1
    steps = max(1, math.ceil(train.epochs * per_epoch))
    return min(steps, train.max_steps) if train.max_steps else steps


class _Experiment:
    """The state one call shares across runs: data, per-seed real sets, synthetic pools."""

    def __init__(self, config: AugmentExperimentConfig, output: Path, log: Callable[[str], None]):
        self.config, self.output, self.log = config, output, log
        data = load_image_dataset(config.real_data)
        missing = [split for split in (config.train_split, config.val_split, config.test_split) if split not in data]
        if missing:
            raise DatasetFormatError(f"{config.real_data} has no split(s) {missing}; its splits are {list(data)}. Set "
                                     "train_split / val_split / test_split in the config.")
        self.train, self.val, self.test = data[config.train_split], data[config.val_split], data[config.test_split]
        self.names = class_names(self.train)
        self.pools: dict[tuple[str, int | None], datasets.Dataset] = {}  # (source, seed or None: all seeds)
        self.sources: dict[str, dict] = {}
        self._bases: dict[int, datasets.Dataset] = {}

    def prepare_sources(self, pending: list[RunSpec]) -> None:
        """Load or generate the synthetic pool of every source a pending run needs (before any training, so a
        missing generator or LoRA fails fast)."""
        for source in self.config.synthetic_sources:
            runs = [run for run in pending if run.kind == SYNTHETIC and run.source == source.name]
            if not runs:
                continue
            count = max(run.per_class for run in runs)
            if not source.per_seed:
                self.log(f"synthetic source {source.name}: {count} images per class")
                self.pools[source.name, None], self.sources[source.name] = source_pool(
                    source, self.names, count, self.output, folder=self.config.image_folder(source))
                continue
            facts = {}
            for seed in sorted({run.seed for run in runs}):  # made from each seed's own real images
                self.log(f"synthetic source {source.name}, seed {seed}: {count} images per class ({source.mode})")
                self.pools[source.name, seed], facts[f"seed-{seed}"] = source_pool(
                    source, self.names, count, self.output, real=self.base(seed), seed=seed,
                    folder=self.config.image_folder(source))
            self.sources[source.name] = {"mode": source.mode, "per_seed": facts}

    def base(self, seed: int) -> datasets.Dataset:
        if seed not in self._bases:
            config = self.config
            self._bases[seed] = real_subset(self.train, seed, config.imbalanced, config.k_shot, config.total,
                                            config.min_per_class)
        return self._bases[seed]

    def training_set(self, run: RunSpec) -> datasets.Dataset:
        """Real subset of the run's seed, plus its added images."""
        base = self.base(run.seed)
        if run.kind == SYNTHETIC:
            pool = self.pools.get((run.source, run.seed), self.pools.get((run.source, None)))
            added = first_per_class(pool, run.per_class, f"synthetic source {run.source!r}")
            if KEPT_COLUMN in added.column_names:  # a filtered source: the judge's rejects stay out
                kept = np.flatnonzero(added[KEPT_COLUMN])
                if not len(kept):
                    raise ValueError(f"The filter of synthetic source {run.source!r} rejected all "
                                     f"{len(added)} images; lower its threshold or check its judge.")
                added = added.select(kept.tolist()).remove_columns(KEPT_COLUMN)
        elif run.kind == EXTRA_REAL:
            added = extra_real(self.train, base, run.per_class, run.seed)
        else:
            added = None
        return combine(base, added)

    def train_config(self, run: RunSpec) -> TrainConfig:
        spec = next(spec for spec in self.config.classifiers if spec.name == run.classifier)
        train = dataclasses.replace(spec.train, seed=run.seed)
        if run.kind == CLASSIC:
            train = dataclasses.replace(train, augment=self.config.controls.classic_augment)
        if self.config.equal_steps and run.kind != REAL_ONLY:
            train = dataclasses.replace(train, max_steps=real_steps(spec.train, len(self.base(run.seed))))
        return train

    def source(self, run: RunSpec) -> SyntheticSource | None:
        """The synthetic source a run adds images from (None for the other kinds)."""
        if run.kind != SYNTHETIC:
            return None
        return next(item for item in self.config.synthetic_sources if item.name == run.source)

    def real_augment(self, run: RunSpec) -> AugmentConfig | None:
        """The augmentation of the run's real images when it differs from that of its added images (a source's
        ``real_augment``), else None."""
        source = self.source(run)
        return source.real_augment if source is not None else None

    def run(self, run: RunSpec, fast: bool) -> dict:
        """Train and test one run; returns its result record."""
        started = time.time()
        train_set = self.training_set(run)
        train = self.train_config(run)
        origins = np.asarray(train_set[ORIGIN_COLUMN])
        added = origins != "real"
        labels = labels_of(train_set)
        weights = None
        if added.any() and run.share is not None:
            exponent = balance_exponent(train.balance) if self.config.balance_within_parts else 0.0
            weights = mixing_weights(labels, added, run.share, exponent)
        source, real_augment = self.source(run), self.real_augment(run)
        extra = ({"alternate_augment": real_augment, "alternate_rows": (~added).tolist()}
                 if real_augment is not None else {})
        history: list[dict] = []
        classifier = train_classifier(train, train_set, self.val, log=history.append, sample_weights=weights,
                                      **extra)
        result = evaluate_classifier(classifier, self.test, progress=False)
        if result.n != len(self.test):
            raise RuntimeError(f"Evaluated {result.n} images, not the real test split's {len(self.test)}.")
        added_labels = np.asarray(labels)[added]
        record = {
            "run_id": run.run_id, "classifier": run.classifier, "condition": run.condition, "kind": run.kind,
            "source": run.source, "per_class": run.per_class, "share": run.share, "seed": run.seed,
            "train_images": {"real": int((~added).sum()), "added": int(added.sum()), "total": len(train_set)},
            "added_per_class": {name: int((added_labels == index).sum()) for index, name in enumerate(self.names)},
            "real_rows": sorted(int(row) for row in np.asarray(train_set[INDEX_COLUMN])[~added]),
            "added_share_expected": float(weights[added].sum()) if weights is not None else None,
            "steps": history[-1]["step"] if history else 0,
            "validation": {"split": self.config.val_split, "n": len(self.val),
                           "best_macro_f1": max((record.get("val_macro_f1", -1.0) for record in history),
                                                default=None)},
            "test": {"split": self.config.test_split, "accuracy": result.accuracy, "macro_f1": result.macro_f1,
                     "per_class_recall": result.per_class_recall, "n": result.n, "nll": result.nll},
            "train_config": train.to_dict(),
            "real_augment": _augment_record(real_augment),
            "fast": fast, "wall_s": time.time() - started,
            "device": _device_name(train.device), "threads": _threads(),
        }
        if source is not None and source.filter.enabled:
            record["filter"] = {"judge": source.filter.describe(), "generated_per_class": run.per_class}
        if run.kind == EXTRA_REAL:
            record["extra_real_rows"] = sorted(int(row) for row in np.asarray(train_set[INDEX_COLUMN])[added])
        return _plain(record)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _augment_record(augment: AugmentConfig | None) -> dict | None:
    """An augmentation as a run's JSON records it (None: the classifier's own)."""
    return _plain(dataclasses.asdict(augment)) if augment is not None else None


def _finished(path: Path, run: RunSpec, train: TrainConfig, fast: bool,
              real_augment: AugmentConfig | None = None) -> dict | None:
    """The saved result of ``run``, or None; raises ConfigError when it was made with other settings."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if (record.get("train_config") != _plain(train.to_dict()) or record.get("fast") != fast
            or record.get("real_augment") != _augment_record(real_augment)):
        raise ConfigError(f"{path} holds run {run.run_id} made with other settings (fast={record.get('fast')}, "
                          f"classifier {record.get('train_config')}, real images augmented as "
                          f"{record.get('real_augment')}); use a new --output, or delete the runs/ folder to start "
                          "over.")
    return record


def run_augment_experiment(config: AugmentExperimentConfig | str | os.PathLike, output_dir: str | os.PathLike,
                           fast: bool = False, log: Callable[[str], None] | None = None,
                           report_only: bool = False, seeds: Sequence[int] | None = None) -> dict:
    """Run every planned run not already saved in ``output_dir/runs/``, then write ``report.json``, ``report.md``
    and the macro-F1 plot there. Returns the report (its ``ran`` and ``skipped`` count this call's work).

    With ``seeds`` only the runs of those seeds (a subset of the config's) are generated and trained in this call, so
    a long experiment can be run one seed at a time; the report covers every saved run and lists the others as
    ``missing``.

    With ``report_only`` nothing is generated or trained: the report covers the runs already saved (an interim
    report of a long experiment) and lists the planned runs still ``missing``."""
    started = time.time()
    if not isinstance(config, AugmentExperimentConfig):
        config = load_config(config)
    if fast:
        config = config.with_fast_caps()
    if seeds is not None:
        unknown = sorted(set(seeds) - set(config.seeds))
        if unknown or not seeds:
            raise ConfigError(f"Seeds {unknown or list(seeds)} are not among the config's seeds {config.seeds}; "
                              "pass some of those (or none, for all).")
    log = log or (lambda message: None)
    output = Path(output_dir)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(json.dumps({"fast": fast, **config.to_dict()}, indent=1) + "\n")

    experiment = _Experiment(config, output, log)
    plan = plan_runs(config)
    results: dict[str, dict] = {}
    pending = []
    for run in plan:
        record = _finished(output / "runs" / f"{run.run_id}.json", run, experiment.train_config(run), fast,
                           experiment.real_augment(run))
        if record is None:
            pending.append(run)
        else:
            results[run.run_id] = record
    if report_only and not results:
        raise ValueError(f"{output / 'runs'} holds no finished run of this config to report on; run the "
                         "experiment without report_only (--report-only) first.")
    now = [run for run in pending if not report_only and (seeds is None or run.seed in seeds)]
    missing, pending = [run.run_id for run in pending if run not in now], now
    experiment.prepare_sources(pending)
    for number, run in enumerate(pending, 1):
        log(f"run {number}/{len(pending)}: {run.run_id}")
        record = experiment.run(run, fast)
        _write_json(output / "runs" / f"{run.run_id}.json", record)
        results[run.run_id] = record
        log(json.dumps({"run": run.run_id, "accuracy": record["test"]["accuracy"],
                        "macro_f1": record["test"]["macro_f1"], "wall_s": round(record["wall_s"], 1)}))

    runs = [results[run.run_id] for run in plan if run.run_id in results]
    rows = summarise(runs)
    report = {
        "name": config.name, "fast": fast, "config": _plain(config.to_dict()),
        "test_size": len(experiment.test), "validation_size": len(experiment.val),
        "runs": runs, "conditions": rows, "target": target_check(rows),
        "synthetic_sources": experiment.sources, "ran": len(pending), "skipped": len(runs) - len(pending),
        "planned": len(plan), "missing": missing,
        "device": _device_name(config.classifiers[0].train.device), "threads": _threads(),
        "runs_wall_s": sum(run["wall_s"] for run in runs), "wall_s": time.time() - started,
        "plot": PLOT_NAME, "std": "sample standard deviation over seeds (ddof 1; 0 with one seed)",
    }
    plot_macro_f1(rows, output / PLOT_NAME)
    report["wall_s"] = time.time() - started
    _write_json(output / "report.json", report)
    (output / "report.md").write_text(markdown_report(report))
    return report
