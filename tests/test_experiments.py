"""The augmentation experiment harness in fast mode on tiny data built in code: its bookkeeping, not its numbers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magic.classifiers import TrainConfig, train_classifier
from magic.data import TorchImageDataset, load_image_dataset
from magic.data.transforms import AugmentConfig
from magic.experiments import ConfigError, config_from_dict, load_config, mixing_weights, plan_runs
from magic.experiments import augment as augment_module
from magic.experiments.augment import run_augment_experiment
from magic.experiments.config import SyntheticSource
from magic.experiments.mixing import INDEX_COLUMN, ORIGIN_COLUMN, extra_real, real_subset
from magic.experiments.synthetic import source_pool
from magic.generation import GenerationSettings, Generator, GeneratorInfo, TinySDConfig, build_pipeline
from tests.conftest import TINY_CLASSES, make_image_dataset
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "experiments" / "fast.yaml"
TINY_SD = TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                       text_encoder="random-tiny", max_prompt_tokens=16)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder holding what fast.yaml names: tiny/real, tiny/generator and tiny/synthetic."""
    folder = tmp_path_factory.mktemp("experiment")
    make_image_dataset(folder / "tiny" / "real")
    build_pipeline(TINY_SD).save_pretrained(folder / "tiny" / "generator", safe_serialization=True)
    GeneratorInfo(label_names=list(TINY_CLASSES), prompt_template="a {name} shape").save(folder / "tiny" / "generator")
    # a "generated" dataset whose class order differs from the real data's: labels must be mapped by name
    make_image_dataset(folder / "tiny" / "synthetic", counts={"train": [5, 5, 5]}, names=TINY_CLASSES[::-1], seed=3)
    return folder


@pytest.fixture(scope="module")
def fast_run(workspace):
    """One fast in-process run of fast.yaml, with every train/evaluate call recorded."""
    calls = {"train": [], "evaluate": []}
    train, evaluate = augment_module.train_classifier, augment_module.evaluate_classifier

    def spy_train(config, train_dataset, val_dataset=None, log=None, sample_weights=None):
        calls["train"].append({"train": train_dataset, "val": val_dataset, "weights": sample_weights,
                               "config": config})
        return train(config, train_dataset, val_dataset, log=log, sample_weights=sample_weights)

    def spy_evaluate(classifier, dataset, **kwargs):
        calls["evaluate"].append(dataset)
        return evaluate(classifier, dataset, **kwargs)

    with pytest.MonkeyPatch.context() as patch, contextlib.chdir(workspace):
        patch.setattr(augment_module, "train_classifier", spy_train)
        patch.setattr(augment_module, "evaluate_classifier", spy_evaluate)
        report = run_augment_experiment(CONFIG, workspace / "out", fast=True)
    return report, calls


def _real(workspace):
    return load_image_dataset(workspace / "tiny" / "real")


def test_every_planned_run_appears_once_with_metrics_in_range(fast_run, workspace):
    report, _ = fast_run
    plan = plan_runs(load_config(CONFIG).with_fast_caps())
    ids = [run["run_id"] for run in report["runs"]]
    assert len(ids) == len(set(ids)) == len(plan) == 14
    assert ids == [run.run_id for run in plan]
    assert {run.kind for run in plan} == {"real-only", "synthetic", "extra-real", "classic-augmentation"}
    for run in report["runs"]:
        assert 0.0 <= run["test"]["accuracy"] <= 1.0 and 0.0 <= run["test"]["macro_f1"] <= 1.0
        assert run["wall_s"] > 0 and run["device"] == "cpu" and run["threads"] >= 1
        assert run["steps"] <= 3  # the fast cap
    out = workspace / "out"
    assert sorted(path.stem for path in (out / "runs").glob("*.json")) == sorted(ids)
    assert json.loads((out / "report.json").read_text())["runs"] == report["runs"]
    assert report["ran"] == 14 and report["skipped"] == 0 and report["wall_s"] > 0
    markdown = (out / "report.md").read_text()
    for text in ("| tiny | real-only |", "| tiny | +untuned | 4 | 0.5 | 2 |", "+extra-real", "classic-augmentation",
                 "27.3", "78.4", "61.8", "76.8", "29.3", "25.6", "31.5", "38.3", "13.89",
                 "CytoDiff's released splits put synthetic images in the test folds", "every test set is real only"):
        assert text in markdown
    with Image.open(out / "macro_f1_vs_synthetic.png") as plot:
        assert plot.size[0] > 100


def test_mean_and_std_are_computed_from_the_per_seed_numbers(fast_run):
    report, _ = fast_run
    assert len(report["conditions"]) == 7
    for row in report["conditions"]:
        members = [run for run in report["runs"] if run["condition"] == row["condition"]
                   and run["per_class"] == row["per_class"] and run["share"] == row["share"]]
        assert [run["seed"] for run in members] == row["seeds"] == [0, 1]
        for metric in ("accuracy", "macro_f1"):
            values = [run["test"][metric] for run in members]
            assert row[metric]["values"] == values
            assert row[metric]["mean"] == pytest.approx(statistics.fmean(values))
            assert row[metric]["std"] == pytest.approx(statistics.stdev(values))
    base = next(row for row in report["conditions"] if row["kind"] == "real-only")
    for row in report["conditions"]:
        assert row["delta_macro_f1"] == pytest.approx(row["macro_f1"]["mean"] - base["macro_f1"]["mean"])


def test_metrics_come_from_the_real_test_split_and_synthetic_images_only_enter_training(fast_run, workspace):
    report, calls = fast_run
    real = _real(workspace)
    assert len(calls["evaluate"]) == len(calls["train"]) == 14
    for dataset in calls["evaluate"]:
        assert dataset._fingerprint == real["test"]._fingerprint and len(dataset) == 18
        assert ORIGIN_COLUMN not in dataset.column_names
    for call in calls["train"]:
        assert call["val"]._fingerprint == real["validation"]._fingerprint
        assert ORIGIN_COLUMN not in call["val"].column_names
    assert all(run["test"]["n"] == len(real["test"]) == report["test_size"] for run in report["runs"])
    origins = {origin for call in calls["train"] for origin in call["train"][ORIGIN_COLUMN]}
    assert origins == {"real", "extra-real", "synthetic:untuned", "synthetic:pregenerated", "synthetic:translated",
                       "synthetic:class-loras"}
    for run, call in zip(report["runs"], calls["train"]):
        assert run["train_images"]["total"] == len(call["train"])
        if run["kind"] == "synthetic":
            assert run["train_images"]["added"] == 4 * len(TINY_CLASSES)
            assert run["added_per_class"] == {name: 4 for name in TINY_CLASSES}
        if run["source"] == "pregenerated":  # its class order is reversed: labels are mapped by class name
            own = load_image_dataset(workspace / "tiny" / "synthetic", split="train")
            rows = [row for row in call["train"] if row[ORIGIN_COLUMN] == "synthetic:pregenerated"]
            assert [TINY_CLASSES[row["label"]] for row in rows] == \
                [TINY_CLASSES[::-1][own[row[INDEX_COLUMN]]["label"]] for row in rows]


def test_rho_weights_give_the_requested_share(fast_run):
    report, calls = fast_run
    labels = [0, 0, 0, 1, 2, 2, 0, 1, 2, 2]
    added = [False] * 6 + [True] * 4
    weights = mixing_weights(labels, added, share=0.2, exponent=-1.0)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[6:].sum() == pytest.approx(0.2)
    # class balance within each part: every class of the real part draws (1 - rho) / 3, of the added part rho / 3
    assert [weights[:6][np.asarray(labels[:6]) == c].sum() for c in range(3)] == pytest.approx([0.8 / 3] * 3)
    assert [weights[6:][np.asarray(labels[6:]) == c].sum() for c in range(3)] == pytest.approx([0.2 / 3] * 3)
    uniform = mixing_weights(labels, added, share=0.5)
    assert np.allclose(uniform[:6], 0.5 / 6) and np.allclose(uniform[6:], 0.5 / 4)
    draws = torch.multinomial(torch.tensor(weights), 20000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    assert (draws >= 6).float().mean().item() == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="share"):
        mixing_weights(labels, added, share=1.0)
    with pytest.raises(ValueError, match="one finite, non-negative weight per training image"):
        train_classifier(TrainConfig(architecture="test_efficientnet", pretrained=False, image_size=32,
                                     num_workers=0, device="cpu"), calls["train"][0]["train"], sample_weights=[1.0])
    # what the runs actually trained with
    for run, call in zip(report["runs"], calls["train"]):
        if run["kind"] in ("synthetic", "extra-real"):
            origins = np.asarray(call["train"][ORIGIN_COLUMN])
            assert np.asarray(call["weights"])[origins != "real"].sum() == pytest.approx(0.5)
            assert run["added_share_expected"] == pytest.approx(0.5)
        else:
            assert call["weights"] is None


def test_extra_real_control_adds_the_planned_disjoint_real_images(fast_run, workspace):
    report, _ = fast_run
    train = _real(workspace)["train"]
    labels = np.asarray(train["label"])
    for run in report["runs"]:
        if run["kind"] != "extra-real":
            continue
        base, extra = set(run["real_rows"]), run["extra_real_rows"]
        left = [int((labels == c).sum()) - int((labels[run["real_rows"]] == c).sum()) for c in range(3)]
        planned = [min(run["per_class"], count) for count in left]  # 4 per class, capped by what the split has left
        assert len(extra) == len(set(extra)) == run["train_images"]["added"] == sum(planned)
        assert base.isdisjoint(extra) and len(base) == run["train_images"]["real"] == 12
        assert np.bincount(labels[extra], minlength=3).tolist() == planned
        assert list(run["added_per_class"].values()) == planned
        same_seed = next(other for other in report["runs"] if other["kind"] == "real-only"
                         and other["seed"] == run["seed"])
        assert same_seed["real_rows"] == run["real_rows"]
    # capped by what is left, and nested: a larger draw keeps the smaller one's images
    base = real_subset(train, seed=0, imbalanced={"disc": 2, "square": 6, "cross": 1}, total=12, min_per_class=2)
    left = [int((labels == c).sum()) - base["label"].count(c) for c in range(3)]
    everything = extra_real(train, base, per_class=100, seed=0)
    assert np.bincount(everything["label"], minlength=3).tolist() == left
    assert set(extra_real(train, base, per_class=2, seed=0)[INDEX_COLUMN]) <= set(everything[INDEX_COLUMN])
    assert set(everything[INDEX_COLUMN]).isdisjoint(base[INDEX_COLUMN])
    shots = real_subset(train, seed=1, k=3)
    assert np.bincount(shots["label"]).tolist() == [3, 3, 3] and set(shots[ORIGIN_COLUMN]) == {"real"}


def test_generated_images_are_cached_and_deterministic(fast_run, workspace):
    from magic.generation.dataset import count_plan

    cache = workspace / "out" / "synthetic" / "untuned"
    assert json.loads((cache / "source.json").read_text())["prompt_template"] == "a {name} shape"
    pool = load_image_dataset(cache, split="train")
    assert len(pool) == 4 * len(TINY_CLASSES)
    generator = Generator.from_pretrained(workspace / "tiny" / "generator", device="cpu")
    rows = {row["job_id"]: row for row in pool}
    for job in [count_plan(TINY_CLASSES, 4, "a {name} shape")[index] for index in (0, 5, 11)]:
        fresh = generator.text_to_image(job.prompt, GenerationSettings(steps=2, guidance=2.0, seed=job.seed))[0]
        assert rows[job.job_id]["seed"] == job.seed and rows[job.job_id]["label"] == TINY_CLASSES.index(job.label)
        assert np.array_equal(np.asarray(rows[job.job_id]["image"].convert("RGB")), np.asarray(fresh))


def test_translated_images_come_from_each_seeds_own_real_images_toward_other_classes(fast_run, workspace):
    from magic.experiments.mixing import real_subset

    report, calls = fast_run
    real = _real(workspace)
    config = report["config"]
    generator = Generator.from_pretrained(workspace / "tiny" / "generator", device="cpu")
    for seed in config["seeds"]:
        base = real_subset(real["train"], seed, config["imbalanced"], config["k_shot"], config["total"],
                           config["min_per_class"])
        pool = load_image_dataset(workspace / "out" / "synthetic" / "translated" / f"seed-{seed}", split="train")
        assert len(pool) == 4 * len(TINY_CLASSES) and set(pool["mode"]) == {"i2i"}
        own_rows = [str(row) for row in base[INDEX_COLUMN]]  # rows of the real train split
        for row in pool:
            assert row["source_id"] in own_rows  # translated from this seed's real training images only
            assert row["source_label"] != TINY_CLASSES[row["label"]]  # MAGIC's rule: target != source
            assert TINY_CLASSES[real["train"][int(row["source_id"])]["label"]] == row["source_label"]
        row = pool[5]
        source = real["train"][int(row["source_id"])]["image"]
        fresh = generator.image_to_image(source, row["prompt"], GenerationSettings(steps=2, guidance=2.0,
                                                                                  strength=0.5, seed=row["seed"]))[0]
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(fresh))
        run = next(r for r in report["runs"] if r["source"] == "translated" and r["seed"] == seed)
        call = calls["train"][report["runs"].index(run)]
        assert sum(origin == "synthetic:translated" for origin in call["train"][ORIGIN_COLUMN]) == 4 * len(TINY_CLASSES)
    assert set(report["synthetic_sources"]["translated"]["per_seed"]) == {f"seed-{s}" for s in config["seeds"]}


def test_class_lora_images_come_from_loras_learnt_on_each_seeds_own_real_images(fast_run, workspace):
    report, calls = fast_run
    real = _real(workspace)
    config = report["config"]
    for seed in config["seeds"]:
        base = real_subset(real["train"], seed, config["imbalanced"], config["k_shot"], config["total"],
                           config["min_per_class"])
        cache = workspace / "out" / "synthetic" / "class-loras" / f"seed-{seed}"
        pool = load_image_dataset(cache, split="train")
        assert len(pool) == 4 * len(TINY_CLASSES) and set(pool["mode"]) == {"t2i"}
        for name in TINY_CLASSES:
            learnt = json.loads((cache / "loras" / name / "magic_class_lora.json").read_text())
            assert learnt["class"] == name and learnt["real_images"] == 2 and learnt["rank"] == 4
            # the shots are this seed's own real images of that class (rows of the real train split)
            own = {str(row[INDEX_COLUMN]) for row in base if TINY_CLASSES[row["label"]] == name}
            assert len(learnt["source_ids"]) == 2 and set(learnt["source_ids"]) <= own
        row = pool[6]
        assert Path(row["lora"]) == cache / "loras" / TINY_CLASSES[row["label"]]
        generator = Generator.from_pretrained(workspace / "tiny" / "generator", device="cpu")
        generator.pipeline.load_lora_weights(row["lora"])
        fresh = generator.text_to_image(row["prompt"], GenerationSettings(steps=2, guidance=2.0, seed=row["seed"]))[0]
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(fresh))
        run = next(r for r in report["runs"] if r["source"] == "class-loras" and r["seed"] == seed)
        call = calls["train"][report["runs"].index(run)]
        origins = call["train"][ORIGIN_COLUMN]
        assert sum(origin == "synthetic:class-loras" for origin in origins) == 4 * len(TINY_CLASSES)
    assert report["synthetic_sources"]["class-loras"]["mode"] == "per-class-lora"


def test_a_lora_source_generates_batched_and_refuses_its_cache_once_the_lora_is_retrained(workspace, tmp_path):
    from magic.generation.adapters import add_lora, save_lora
    from magic.generation.dataset import count_plan

    lora = tmp_path / "feedback-lora"
    generator = Generator.from_pretrained(workspace / "tiny" / "generator", device="cpu")
    torch.manual_seed(0)
    add_lora(generator.pipeline, rank=4)
    save_lora(generator.pipeline, lora)
    source = SyntheticSource(name="dpo", generator=str(workspace / "tiny" / "generator"), lora=str(lora), steps=2,
                             guidance=2.0, batch_size=2)
    pool, facts = source_pool(source, TINY_CLASSES, 3, tmp_path / "out")
    assert len(pool) == 3 * len(TINY_CLASSES) and facts["generated"] == 3 * len(TINY_CLASSES)
    cache = tmp_path / "out" / "synthetic" / "dpo"
    spec = json.loads((cache / "source.json").read_text())
    assert spec["batch_size"] == 2 and len(spec["lora_sha256"]) == 64
    job = count_plan(TINY_CLASSES, 3, "a {name} shape")[-1]  # 3 x 3 jobs in batches of 2: the last is drawn alone
    reloaded = Generator.from_pretrained(workspace / "tiny" / "generator", device="cpu")
    reloaded.pipeline.load_lora_weights(str(lora))
    fresh = reloaded.text_to_image(job.prompt, GenerationSettings(steps=2, guidance=2.0), seeds=[job.seed])[0]
    row = next(row for row in load_image_dataset(cache, split="train") if row["job_id"] == job.job_id)
    assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(fresh))
    torch.manual_seed(1)  # "retrain": the same folder now holds other weights
    retrained = Generator.from_pretrained(workspace / "tiny" / "generator", device="cpu")
    add_lora(retrained.pipeline, rank=4)
    save_lora(retrained.pipeline, lora)
    with pytest.raises(ConfigError, match="delete the folder"):
        source_pool(source, TINY_CLASSES, 3, tmp_path / "out")
    missing = SyntheticSource(name="gone", generator=str(workspace / "tiny" / "generator"), lora="no/such-lora")
    with pytest.raises(FileNotFoundError, match="LoRA no/such-lora not found"):
        source_pool(missing, TINY_CLASSES, 3, tmp_path / "out")


def test_rerun_skips_finished_runs_and_does_not_regenerate(fast_run, workspace, monkeypatch):
    out = workspace / "out"
    stamps = {path: path.stat().st_mtime_ns for path in [*(out / "runs").glob("*.json"),
                                                         *(out / "synthetic").rglob("*.parquet")]}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(augment_module, "train_classifier", refuse)
    monkeypatch.setattr(Generator, "from_pretrained", refuse)
    monkeypatch.chdir(workspace)
    again = run_augment_experiment(CONFIG, out, fast=True)
    assert again["ran"] == 0 and again["skipped"] == 14
    assert again["runs"] == fast_run[0]["runs"]
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    with pytest.raises(ConfigError, match="other settings"):  # the full run must not reuse fast results
        run_augment_experiment(CONFIG, out, fast=False)


def test_report_only_reports_the_finished_runs_and_lists_the_missing_ones(fast_run, workspace, monkeypatch,
                                                                           tmp_path):
    finished = sorted((workspace / "out" / "runs").glob("*.json"))
    kept = [path for path in finished if "seed0" in path.name]  # an experiment stopped after its first seed
    assert 0 < len(kept) < len(finished)
    (tmp_path / "runs").mkdir()
    for path in kept:
        (tmp_path / "runs" / path.name).write_bytes(path.read_bytes())

    def refuse(*args, **kwargs):
        raise AssertionError("report_only generated or trained")

    monkeypatch.setattr(augment_module, "train_classifier", refuse)
    monkeypatch.setattr(Generator, "from_pretrained", refuse)
    monkeypatch.chdir(workspace)
    report = run_augment_experiment(CONFIG, tmp_path, fast=True, report_only=True)
    assert report["ran"] == 0 and report["skipped"] == len(kept) and report["planned"] == len(finished)
    assert sorted(report["missing"]) == sorted(path.stem for path in finished if path not in kept)
    assert {run["run_id"] for run in report["runs"]} == {path.stem for path in kept}
    full = {(row["condition"], row["per_class"], row["share"]): row for row in fast_run[0]["conditions"]}
    for row in report["conditions"]:  # each row is its seed-0 run, not the full run's mean
        assert row["seeds"] == [0]
        run = next(run for run in fast_run[0]["runs"] if run["seed"] == 0 and run["condition"] == row["condition"]
                   and run["per_class"] == row["per_class"] and run["share"] == row["share"])
        assert row["macro_f1"]["mean"] == run["test"]["macro_f1"]
        assert (row["condition"], row["per_class"], row["share"]) in full
    markdown = (tmp_path / "report.md").read_text()
    assert f"Interim report**: {len(kept)} of {len(finished)} planned runs" in markdown
    assert all(f"`{run_id}`" in markdown for run_id in report["missing"])
    empty = tmp_path / "empty"
    with pytest.raises(ValueError, match="no finished run"):
        run_augment_experiment(CONFIG, empty, fast=True, report_only=True)


def test_seeds_runs_only_those_seeds_and_lists_the_rest_as_missing(fast_run, workspace, monkeypatch, tmp_path):
    import shutil

    finished = sorted((workspace / "out" / "runs").glob("*.json"))
    dropped = [next(path for path in finished if path.stem.endswith(f"__seed{seed}")) for seed in (0, 1)]
    (tmp_path / "runs").mkdir()
    for path in finished:
        if path not in dropped:
            (tmp_path / "runs" / path.name).write_bytes(path.read_bytes())
    shutil.copytree(workspace / "out" / "synthetic", tmp_path / "synthetic")  # the image cache: nothing to draw
    trained = []
    train = augment_module.train_classifier

    def spy(config, train_dataset, val_dataset=None, log=None, sample_weights=None):
        trained.append(config.seed)
        return train(config, train_dataset, val_dataset, log=log, sample_weights=sample_weights)

    monkeypatch.setattr(augment_module, "train_classifier", spy)
    monkeypatch.chdir(workspace)
    report = run_augment_experiment(CONFIG, tmp_path, fast=True, seeds=[0])
    assert report["ran"] == 1 and trained == [0]  # only the seed-0 run that was missing
    assert (tmp_path / "runs" / dropped[0].name).is_file() and not (tmp_path / "runs" / dropped[1].name).exists()
    assert report["missing"] == [dropped[1].stem]
    assert f"`{dropped[1].stem}`" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError, match=r"Seeds \[7\] are not among the config's seeds \[0, 1\]"):
        run_augment_experiment(CONFIG, tmp_path, fast=True, seeds=[0, 7])
    from magic.cli import main  # the command line resumes the other seed

    assert main(["experiment", "augment", "--config", str(CONFIG), "--output", str(tmp_path), "--fast",
                 "--seeds", "1"]) == 0
    assert trained == [0, 1] and (tmp_path / "runs" / dropped[1].name).is_file()
    assert json.loads((tmp_path / "report.json").read_text())["missing"] == []


def test_gains_are_paired_by_seed_so_an_interim_report_compares_like_with_like():
    from magic.experiments.report import summarise, target_check

    def run(kind, condition, seed, macro_f1):
        return {"classifier": "c", "kind": kind, "source": None if kind != "synthetic" else condition,
                "condition": condition, "per_class": 0 if kind != "synthetic" else 500, "share": None, "seed": seed,
                "train_images": {"added": 0}, "test": {"accuracy": macro_f1, "macro_f1": macro_f1}}

    runs = [run("real-only", "real-only", seed, value) for seed, value in ((0, 0.70), (1, 0.74), (2, 0.60))]
    runs += [run("synthetic", "+a", 0, 0.78), run("synthetic", "+a", 1, 0.82)]  # seed 2 not run yet
    runs += [run("synthetic", "+b", seed, value) for seed, value in ((0, 0.76), (1, 0.80), (2, 0.69))]
    runs += [run("classic-augmentation", "classic-augmentation", seed, 0.72) for seed in (0, 1, 2)]
    rows = {row["condition"]: row for row in summarise(runs)}
    assert rows["+a"]["seeds"] == [0, 1] and rows["+a"]["macro_f1"]["mean"] == pytest.approx(0.80)
    assert rows["+a"]["delta_macro_f1"] == pytest.approx(0.08)  # paired; the means would say 0.80 - 0.68 = 0.12
    assert rows["+b"]["delta_macro_f1"] == pytest.approx(0.07)  # every seed: the difference of the means
    assert rows["real-only"]["delta_macro_f1"] == 0.0
    check = target_check(list(rows.values()))["c"]
    assert check["best"].startswith("+a") and check["macro_f1_gain_over_real_only"] == pytest.approx(0.08)
    assert check["macro_f1_gain_over_classic"] == pytest.approx(0.08) and not check["met"]


def test_a_source_can_be_swept_over_its_own_counts():
    import yaml

    good = yaml.safe_load(CONFIG.read_text())
    config = config_from_dict({**good, "synthetic_per_class": [0, 4, 8],
                               "synthetic_sources": [{"name": "cheap", "generator": "g"},
                                                     {"name": "slow", "generator": "g", "synthetic_per_class": [4]}]})
    counts = {}
    for run in plan_runs(config):
        counts.setdefault(run.source or run.kind, set()).add(run.per_class)
    assert counts["cheap"] == {4, 8} and counts["slow"] == {4} and counts["extra-real"] == {4, 8}
    with pytest.raises(ConfigError, match="counts >= 1"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "g", "synthetic_per_class": [0]}]})


def _one_seed_experiment(name: str, sources: list[dict], classic_augmentation: bool) -> dict:
    """A one-seed experiment config on the tiny data (2 classifier steps a run) with the given sources."""
    return {
        "name": name, "real_data": "tiny/real", "imbalanced": {"disc": 2, "square": 6, "cross": 1},
        "total": 12, "min_per_class": 2, "synthetic_per_class": [0, 4], "synthetic_share": [0.5], "seeds": [0],
        "classifiers": [{"name": "tiny", "architecture": "test_efficientnet", "pretrained": False, "image_size": 32,
                         "max_steps": 2, "batch_size": 8, "num_workers": 0, "device": "cpu"}],
        "synthetic_sources": sources,
        "controls": {"extra_real": False, "classic_augmentation": classic_augmentation}}


def test_a_filtered_source_reuses_its_twins_images_and_trains_only_on_those_its_judge_keeps(
        workspace, tiny_classifier_dir, tmp_path, monkeypatch):
    from magic.generation.filtering import FilterConfig, ImageFilter

    monkeypatch.chdir(workspace)
    settings = {"generator": "tiny/generator", "steps": 2, "guidance": 2.0}
    untuned = SyntheticSource(name="untuned", **settings)
    pool, _ = source_pool(untuned, TINY_CLASSES, 4, tmp_path / "out")  # the twin's images, generated once
    judge = ImageFilter(FilterConfig(classifier=str(tiny_classifier_dir)))
    scores = judge.scores(pool["image"], [TINY_CLASSES[label] for label in pool["label"]])
    threshold = float(np.median(scores))
    kept = np.flatnonzero(scores >= threshold)
    assert 0 < len(kept) < len(pool)

    calls = []
    train = augment_module.train_classifier

    def spy_train(config, train_dataset, val_dataset=None, log=None, sample_weights=None):
        calls.append(train_dataset)
        return train(config, train_dataset, val_dataset, log=log, sample_weights=sample_weights)

    def refuse(*args, **kwargs):
        raise AssertionError("the filtered source generated images its twin had already made")

    monkeypatch.setattr(augment_module, "train_classifier", spy_train)
    monkeypatch.setattr(Generator, "from_pretrained", refuse)
    config = config_from_dict(_one_seed_experiment(
        "filtered", [{"name": "untuned", **settings},
                     {"name": "untuned-kept", **settings,
                      "filter": {"classifier": str(tiny_classifier_dir), "min_confidence": threshold}}],
        classic_augmentation=False))
    report = run_augment_experiment(config, tmp_path / "out")
    assert report["ran"] == 3 and not (tmp_path / "out" / "synthetic" / "untuned-kept").exists()
    runs = {run["source"] or run["kind"]: run for run in report["runs"]}
    assert runs["untuned"]["added_per_class"] == {name: 4 for name in TINY_CLASSES}
    labels = np.asarray(pool["label"])
    assert runs["untuned-kept"]["added_per_class"] == {name: int((labels[kept] == index).sum())
                                                       for index, name in enumerate(TINY_CLASSES)}
    assert runs["untuned-kept"]["filter"]["generated_per_class"] == 4
    filtered_set = next(data for data in calls if "synthetic:untuned-kept" in data[ORIGIN_COLUMN])
    added = [row for row, origin in zip(filtered_set[INDEX_COLUMN], filtered_set[ORIGIN_COLUMN]) if origin != "real"]
    assert added == kept.tolist()  # exactly the images the judge kept, in pool order
    facts = report["synthetic_sources"]["untuned-kept"]["filter"]
    assert sum(count["kept"] for count in facts["per_class"].values()) == len(kept)
    assert f"kept {len(kept)} of {len(pool)} images" in (tmp_path / "out" / "report.md").read_text()

    # the scores are cached beside the images: judging again would be a waste (and, for an API evaluator, cost)
    monkeypatch.setattr(ImageFilter, "scores", refuse)
    again, _ = source_pool(config.synthetic_sources[1], TINY_CLASSES, 4, tmp_path / "out", folder="untuned")
    assert np.flatnonzero(again["filter_kept"]).tolist() == kept.tolist()


def test_real_augment_augments_only_the_real_images_otherwise_and_reuses_its_twins_images(
        workspace, tmp_path, monkeypatch):
    settings = {"generator": "tiny/generator", "steps": 2, "guidance": 2.0}
    monkeypatch.chdir(workspace)
    source_pool(SyntheticSource(name="untuned", **settings), TINY_CLASSES, 4, tmp_path / "out")  # the twin's images
    calls = []
    train = augment_module.train_classifier

    def spy_train(config, train_dataset, val_dataset=None, log=None, sample_weights=None, **kwargs):
        calls.append({"train": train_dataset, "config": config, **kwargs})
        return train(config, train_dataset, val_dataset, log=log, sample_weights=sample_weights, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the source generated images its twin had already made")

    monkeypatch.setattr(augment_module, "train_classifier", spy_train)
    monkeypatch.setattr(Generator, "from_pretrained", refuse)
    values = _one_seed_experiment(
        "real-augment", [{"name": "untuned", **settings},
                         {"name": "untuned-real-classic", **settings,
                          "real_augment": {"scale": [0.3, 1.0], "color_jitter": 0.3, "re_prob": 0.5}}],
        classic_augmentation=True)
    config = config_from_dict(values)
    report = run_augment_experiment(config, tmp_path / "out")
    assert report["ran"] == 4 and not (tmp_path / "out" / "synthetic" / "untuned-real-classic").exists()
    runs = {run["source"] or run["kind"]: run for run in report["runs"]}
    by_source = dict(zip((run["source"] or run["kind"] for run in report["runs"]), calls))
    strong = config.synthetic_sources[1].real_augment
    assert strong == AugmentConfig(scale=(0.3, 1.0), color_jitter=0.3, re_prob=0.5)
    mixed = by_source["untuned-real-classic"]
    origins = np.asarray(mixed["train"][ORIGIN_COLUMN])
    assert mixed["alternate_augment"] == strong and mixed["alternate_rows"] == (origins == "real").tolist()
    assert 0 < sum(mixed["alternate_rows"]) < len(origins)
    assert mixed["config"].augment == config.classifiers[0].train.augment != strong  # the added images: default
    assert runs["untuned-real-classic"]["real_augment"] == json.loads(json.dumps(dataclasses.asdict(strong)))
    assert runs["untuned-real-classic"]["real_augment"]["scale"] == [0.3, 1.0]
    for name in ("untuned", "real-only", "classic-augmentation"):
        assert "alternate_augment" not in by_source[name] and runs[name]["real_augment"] is None
    assert by_source["classic-augmentation"]["config"].augment == config.controls.classic_augment
    # the twin's images, the same rows in the same order
    twin = by_source["untuned"]["train"]
    assert mixed["train"][INDEX_COLUMN] == twin[INDEX_COLUMN] and mixed["train"]["label"] == twin["label"]

    # a finished run is not reused once its real images are to be augmented otherwise
    values["synthetic_sources"][1]["real_augment"]["re_prob"] = 0.25
    with pytest.raises(ConfigError, match="real images augmented as"):
        run_augment_experiment(config_from_dict(values), tmp_path / "out")
    values["synthetic_sources"][1]["real_augment"] = {"scale": [0.3, 1.0], "colour_jitter": 0.3}
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['colour_jitter'\].*real_augment"):
        config_from_dict(values)


def test_a_torch_dataset_sends_the_marked_rows_through_the_alternate_transform(workspace):
    rows = _real(workspace)["train"].select(range(6))
    marked = [True, False, False, True, False, True]
    data = TorchImageDataset(rows, lambda image: torch.zeros(1), lambda image: torch.ones(1), marked)
    assert [float(data[index][0]) for index in range(6)] == [float(flag) for flag in marked]
    assert [data[index][1] for index in range(6)] == rows["label"]
    with pytest.raises(ValueError, match="one bool per row"):
        TorchImageDataset(rows, lambda image: torch.zeros(1), lambda image: torch.ones(1), marked[:3])
    with pytest.raises(ValueError, match="or neither"):
        TorchImageDataset(rows, lambda image: torch.zeros(1), alternate_rows=marked)


def test_a_source_with_class_loras_draws_those_classes_with_them_and_the_rest_as_before(workspace, tmp_path):
    """class_loras: a class with its own LoRA (e.g. the embedded basophil LoRA) is drawn with it, the others
    as the plain source draws them (to the pixel here, where batches end where classes do); the cache is the
    source's own and is refused once a LoRA changes."""
    from magic.generation.adapters import add_lora, save_lora

    folder = workspace / "tiny" / "generator"
    generator = Generator.from_pretrained(folder, device="cpu")
    torch.manual_seed(0)
    add_lora(generator.pipeline, rank=4)
    for name, parameter in generator.pipeline.unet.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.5)
    loras = tmp_path / "class-loras"
    save_lora(generator.pipeline, loras / TINY_CLASSES[0])
    plain = SyntheticSource(name="plain", generator=str(folder), steps=2, guidance=2.0, batch_size=3)
    own = SyntheticSource(name="own", generator=str(folder), steps=2, guidance=2.0, batch_size=3,
                          class_loras=str(loras))
    plain_pool, _ = source_pool(plain, TINY_CLASSES, 3, tmp_path / "out")
    own_pool, facts = source_pool(own, TINY_CLASSES, 3, tmp_path / "out")
    assert facts["generated"] == 3 * len(TINY_CLASSES) and own_pool["label"] == plain_pool["label"]
    spec = json.loads((tmp_path / "out" / "synthetic" / "own" / "source.json").read_text())
    assert list(spec["class_loras_sha256"]) == [TINY_CLASSES[0]] and spec["class_loras"] == str(loras)
    rows = load_image_dataset(tmp_path / "out" / "synthetic" / "own", split="train")
    assert sorted(set(rows["lora"])) == ["", str(loras / TINY_CLASSES[0])]
    pixels = [[np.asarray(image.convert("RGB")) for image in pool["image"]] for pool in (plain_pool, own_pool)]
    assert all(not np.array_equal(a, b) for a, b in zip(pixels[0][:3], pixels[1][:3]))  # the class's own LoRA
    assert all(np.array_equal(a, b) for a, b in zip(pixels[0][3:], pixels[1][3:]))  # the others as before
    torch.manual_seed(1)  # "retrain" the class's LoRA in place
    for name, parameter in generator.pipeline.unet.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.5)
    save_lora(generator.pipeline, loras / TINY_CLASSES[0])
    with pytest.raises(ConfigError, match="delete the folder"):
        source_pool(own, TINY_CLASSES, 3, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a folder of class LoRAs"):
        source_pool(SyntheticSource(name="gone", generator=str(folder), class_loras=str(tmp_path / "none")),
                    TINY_CLASSES, 3, tmp_path / "out")


def test_unknown_or_contradictory_config_keys_raise_clear_errors(tmp_path):
    import yaml

    good = yaml.safe_load(CONFIG.read_text())
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['seedz'\].*known keys"):
        config_from_dict({**good, "seedz": [0]})
    with pytest.raises(ConfigError, match=r"'archtecture'.*classifiers\[0\]"):
        config_from_dict({**good, "classifiers": [{"name": "x", "archtecture": "resnet18"}]})
    with pytest.raises(ConfigError, match="exactly one of `dataset`"):
        config_from_dict({**good, "synthetic_sources": [{"name": "both", "dataset": "a", "generator": "b"}]})
    with pytest.raises(ConfigError, match="image-to-image needs `generator`"):
        config_from_dict({**good, "synthetic_sources": [{"name": "i2i", "dataset": "a", "mode": "image-to-image"}]})
    with pytest.raises(ConfigError, match=r"class_lora: shots, rank"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b", "mode": "per-class-lora",
                                                         "class_lora": {"shots": 0}}]})
    with pytest.raises(ConfigError, match="drop `lora`"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b", "mode": "per-class-lora",
                                                         "lora": "runs/feedback/lora"}]})
    with pytest.raises(ConfigError, match="class_loras draws text-to-image images"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b", "mode": "image-to-image",
                                                         "class_loras": "magic-suite/wbc-generator-class-loras"}]})
    with pytest.raises(ConfigError, match="give both class_loras and lora"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b", "class_loras_replace": True,
                                                         "class_loras": "magic-suite/wbc-generator-class-loras"}]})
    with pytest.raises(ConfigError, match="mode 'inpaint' is not supported"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b", "mode": "inpaint"}]})
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b", "batch_size": 0}]})
    with pytest.raises(ConfigError, match=r"synthetic_sources\[0\].filter: A filter takes a `classifier` or an"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b",
                                                         "filter": {"classifier": "c", "evaluator": "embedded"}}]})
    with pytest.raises(ConfigError, match="needs `catalog`"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b",
                                                         "filter": {"evaluator": "embedded"}}]})
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['min_confidance'\]"):
        config_from_dict({**good, "synthetic_sources": [{"name": "x", "generator": "b",
                                                         "filter": {"classifier": "c", "min_confidance": 0.5}}]})
    with pytest.raises(ConfigError, match="synthetic_share"):
        config_from_dict({**good, "synthetic_share": [1.5]})
    with pytest.raises(ConfigError, match="Missing key"):
        config_from_dict({key: value for key, value in good.items() if key != "real_data"})
    with pytest.raises(FileNotFoundError, match="feedback-loop"):
        source_pool(SyntheticSource(name="dpo", generator="any", lora=str(tmp_path / "missing")), TINY_CLASSES, 1,
                    tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.read_text() + "\ncontrols: {extra_reall: true}\n")
    with pytest.raises(ConfigError, match=f"{path}: controls"):
        load_config(path)


def test_cli_runs_fast_mode_end_to_end(fast_run, workspace):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "magic", "experiment", "augment", "--config", str(CONFIG),
                           "--output", "cli-out", "--fast", "--seeds", "0"], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["runs"] == summary["ran"] == 7 and summary["fast"] is True
    assert len(summary["missing"]) == 7 and all(run_id.endswith("__seed1") for run_id in summary["missing"])
    assert len(summary["conditions"]) == 7
    out = workspace / "cli-out"
    assert (out / "report.md").is_file() and (out / "macro_f1_vs_synthetic.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert all(run["test"]["n"] == 18 for run in report["runs"])
    # the same config generates the same images in another output folder (up to float rounding: this process and
    # the CLI may run torch with different thread counts)
    ours, theirs = (load_image_dataset(folder / "synthetic" / "untuned", split="train") for folder in
                    (workspace / "out", out))
    assert len(ours) == len(theirs) and list(ours["label"]) == list(theirs["label"])
    for a, b in zip(ours, theirs):
        difference = np.abs(np.asarray(a["image"], dtype=np.int16) - np.asarray(b["image"], dtype=np.int16))
        assert difference.max() <= 2, difference.max()
    bad = run_cli("experiment", "augment", "--config", str(CONFIG), "--output", "cli-out", cwd=workspace)
    assert bad.returncode == 2 and "other settings" in bad.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_plans_distinct_runs_with_a_real_only_baseline(path):
    config = load_config(path)
    runs = plan_runs(config)
    ids = [run.run_id for run in runs]
    assert len(ids) == len(set(ids)) > 1
    for spec in config.classifiers:  # every classifier and seed has its real-only baseline to compare with
        baselines = {run.seed for run in runs if run.classifier == spec.name and run.kind == "real-only"}
        assert baselines == set(config.seeds), (spec.name, baselines)
