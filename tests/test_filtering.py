"""Filters that keep the generated images a judge accepts: classifier and evaluator judges, thresholds, the score
cache and bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from magic.classifiers import load_classifier
from magic.data import load_image_dataset
from magic.generation.filtering import SCORES_FOLDER, FilterConfig, ImageFilter, cached_scores
from tests.conftest import TINY_CLASSES


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
