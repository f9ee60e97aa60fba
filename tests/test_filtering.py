"""Filters that keep the generated images a judge accepts: classifier and evaluator judges, thresholds, the score
cache and bad settings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from magic.classifiers import load_classifier
from magic.data import load_image_dataset
from magic.generation.filtering import SCORES_FOLDER, FilterConfig, ImageFilter, cached_scores
from tests.conftest import TINY_CLASSES
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def tiny_images(tiny_dataset):
    test = load_image_dataset(tiny_dataset)["test"]
    return list(test["image"]), [TINY_CLASSES[label] for label in test["label"]]


def test_a_classifier_filter_scores_each_image_by_its_probability_of_the_intended_class(tiny_classifier_dir,
                                                                                         tiny_images):
    images, labels = tiny_images
    wrong = [TINY_CLASSES[(TINY_CLASSES.index(label) + 1) % 3] for label in labels]
    judge = ImageFilter(FilterConfig(classifier=str(tiny_classifier_dir), min_confidence=0.5, batch_size=5))
    probabilities = load_classifier(tiny_classifier_dir).predict_proba(images)
    right_scores, wrong_scores = judge.scores(images, labels), judge.scores(images, wrong)
    np.testing.assert_allclose(right_scores, probabilities[np.arange(len(images)),
                                                           [TINY_CLASSES.index(label) for label in labels]],
                               atol=1e-5)
    assert right_scores.mean() > wrong_scores.mean()  # the trained classifier sees the drawn shapes
    np.testing.assert_array_equal(judge.keep(right_scores), right_scores >= 0.5)
    with pytest.raises(ValueError, match=r"does not know the classes \['basophil'\]"):
        judge.scores(images[:1], ["basophil"])
    with pytest.raises(ValueError, match="2 images for 1 labels"):
        judge.scores(images[:2], labels[:1])


def test_an_evaluator_filter_keeps_images_meeting_enough_checklist_items():
    from magic.evaluation import load_evaluator

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    images += [Image.new("RGB", (64, 64), (200, 120, 190))]
    labels = ["basophil", "monocyte", "platelet"]
    judge = ImageFilter(FilterConfig(evaluator="embedded", catalog="pbc", min_score=3))
    scores = judge.scores(images, labels)
    expected = [load_evaluator("embedded").evaluate(image, f"pbc:{label}").score
                for image, label in zip(images, labels)]
    assert scores.tolist() == expected
    np.testing.assert_array_equal(judge.keep(np.array([0, 2, 3, 5])), [False, False, True, True])


def test_scores_are_cached_by_row_id_and_only_new_rows_are_judged(tiny_classifier_dir, tiny_images, tmp_path):
    images, labels = tiny_images
    judge = ImageFilter(FilterConfig(classifier=str(tiny_classifier_dir)))
    ids = [f"t2i-{i:06d}" for i in range(len(images))]
    asked = []

    def load(rows):
        asked.append(list(rows))
        return [images[row] for row in rows]

    first = cached_scores(judge, ids[:10], labels[:10], load, tmp_path)
    both = cached_scores(judge, ids, labels, load, tmp_path)
    assert asked == [list(range(10)), list(range(10, len(ids)))]
    np.testing.assert_array_equal(both[:10], first)
    stored = json.loads((tmp_path / SCORES_FOLDER / f"{judge.score_key}.json").read_text())
    assert stored["judge"] == {"classifier": str(tiny_classifier_dir)} and len(stored["scores"]) == len(ids)
    assert cached_scores(judge, ids, labels, load, tmp_path).tolist() == both.tolist() and len(asked) == 2
    with pytest.raises(ValueError, match="unique"):
        cached_scores(judge, ["a", "a"], labels[:2], load, tmp_path)

    # a retrained classifier in the same folder is another judge: its scores are not read from the old file
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_classifier_dir, retrained)
    before = ImageFilter(FilterConfig(classifier=str(retrained))).score_key
    weights = load_file(retrained / "model.safetensors")
    save_file({name: tensor + 0.01 if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              retrained / "model.safetensors")
    assert ImageFilter(FilterConfig(classifier=str(retrained))).score_key != before


def test_bad_filter_settings_say_what_to_change():
    assert not FilterConfig().enabled and FilterConfig().describe() == "none"
    with pytest.raises(ValueError, match="not both"):
        FilterConfig(classifier="c", evaluator="embedded")
    with pytest.raises(ValueError, match="needs `catalog`"):
        FilterConfig(evaluator="embedded")
    with pytest.raises(ValueError, match=r"min_confidence must be in \[0, 1\]"):
        FilterConfig(classifier="c", min_confidence=1.5)
    with pytest.raises(ValueError, match="names no judge"):
        ImageFilter(FilterConfig())
    assert "p(intended class) >= 0.7" in FilterConfig(classifier="c", min_confidence=0.7).describe()


@pytest.fixture(scope="module")
def generated_dataset(tmp_path_factory) -> str:
    """A tiny generated dataset (parquet shards + card + provenance), as `generate-dataset` writes."""
    from magic.generation import GenerationSettings, Generator, TinySDConfig, build_pipeline
    from magic.generation.dataset import count_plan, generate_dataset, write_dataset_card

    folder = tmp_path_factory.mktemp("generated")
    config = TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                          text_encoder="random-tiny", max_prompt_tokens=16)
    build_pipeline(config).save_pretrained(folder / "generator", safe_serialization=True)
    generator = Generator.from_pretrained(folder / "generator", device="cpu")
    settings = GenerationSettings(steps=2, guidance=2.0)
    generate_dataset(generator, count_plan(TINY_CLASSES, 4, "a {name} shape"), folder / "data-set", TINY_CLASSES,
                     settings, batch_size=4)
    write_dataset_card(folder / "data-set", TINY_CLASSES, "tiny/generator", settings, license="cc-by-4.0")
    return str(folder / "data-set")


def test_filter_dataset_writes_a_hub_shaped_dataset_of_the_kept_rows_with_their_provenance(
        generated_dataset, tiny_classifier_dir, tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    from magic.generation.filtering import filter_dataset

    source = load_image_dataset(generated_dataset, split="train")
    labels = [TINY_CLASSES[label] for label in source["label"]]
    scores = ImageFilter(FilterConfig(classifier=str(tiny_classifier_dir))).scores(source["image"], labels)
    threshold = float(np.median(scores))
    config = FilterConfig(classifier=str(tiny_classifier_dir), min_confidence=threshold)
    summary = filter_dataset(generated_dataset, tmp_path / "kept", config, shard_size=5)
    kept = np.flatnonzero(scores >= threshold)
    assert 0 < summary["kept"] == len(kept) < summary["judged"] == len(source)
    out = load_image_dataset(tmp_path / "kept", split="train")
    assert out["job_id"] == [source["job_id"][i] for i in kept]  # source order, provenance kept
    assert set(source.column_names) < set(out.column_names) and "filter_score" in out.column_names
    np.testing.assert_allclose(out["filter_score"], scores[kept], atol=1e-6)
    assert np.array_equal(np.asarray(out[0]["image"]), np.asarray(source[int(kept[0])]["image"]))
    assert len(list((tmp_path / "kept" / "data").glob("train-*.parquet"))) == -(-len(kept) // 5)
    card = (tmp_path / "kept" / "README.md").read_text()
    assert "| class | judged | kept |" in card and "The source dataset's card" in card and "synthetic" in card
    for name in TINY_CLASSES:
        assert f"| {name} | {labels.count(name)} | {summary['per_class'][name]['kept']} |" in card

    # a stricter threshold reuses the cached scores; writing over the source is refused
    monkeypatch.setattr(ImageFilter, "scores", lambda *args: pytest.fail("judged an image twice"))
    stricter = filter_dataset(generated_dataset, tmp_path / "kept",
                              FilterConfig(classifier=str(tiny_classifier_dir), min_confidence=float(scores.max())))
    assert stricter["kept"] == int((scores >= scores.max()).sum())
    with pytest.raises(ValueError, match="new folder"):
        filter_dataset(generated_dataset, generated_dataset, config)

    root = Path(__file__).resolve().parent.parent
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "magic", "filter-dataset", "--data", generated_dataset, "--output",
                           str(tmp_path / "cli"), "--classifier", str(tiny_classifier_dir), "--min-confidence",
                           str(threshold)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["kept"] == len(kept)
    missing = run_cli("filter-dataset", "--data", generated_dataset, "--output", str(tmp_path / "bad"),
                      "--evaluator", "embedded")
    assert missing.returncode != 0 and "needs `catalog`" in missing.stderr
