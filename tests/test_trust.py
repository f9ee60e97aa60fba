"""Saliency, calibration and the out-of-distribution / unsure answers of a classifier."""

import numpy as np
import torch
from PIL import Image

from magic.classifiers import load_classifier
from magic.classifiers.explain import grad_cam, overlay
from magic.classifiers.ood import FeatureDistance, fit_feature_distance
from tests.conftest import draw_shape


def test_grad_cam_is_a_normalised_map_at_image_size(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    image = draw_shape("disc", np.random.default_rng(0)).resize((48, 40))
    saliency = grad_cam(classifier, image)
    assert saliency.shape == (40, 48) and saliency.min() >= 0 and saliency.max() <= 1
    assert overlay(image, saliency).size == image.size
    assert grad_cam(classifier, image, target="cross").shape == (40, 48)


def test_ood_detector_is_saved_with_the_model_and_round_trips(tiny_classifier_dir, tmp_path):
    classifier = load_classifier(tiny_classifier_dir)
    assert isinstance(classifier.ood, FeatureDistance)
    classifier.save_pretrained(tmp_path / "again")
    reloaded = load_classifier(tmp_path / "again")
    features = torch.randn(5, classifier.ood.mean.shape[0])
    assert torch.allclose(classifier.ood.distance(features), reloaded.ood.distance(features))
    assert float(reloaded.ood.threshold) == float(classifier.ood.threshold)


def test_detector_separates_a_shifted_cloud():
    rng = torch.Generator().manual_seed(0)
    train = torch.randn(400, 16, generator=rng)
    labels = (train[:, 0] > 0).long()
    val = torch.randn(200, 16, generator=rng)
    detector = fit_feature_distance(train, labels, val, num_classes=2, dims=8, quantile=0.95)
    assert detector.is_outlier(val).float().mean() <= 0.06
    assert detector.is_outlier(torch.randn(100, 16, generator=rng) * 0.5 + 6).all()


def test_assess_flags_noise_and_blank_inputs_as_not_ok(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    rng = np.random.default_rng(1)
    in_distribution = [draw_shape(kind, rng) for kind in ("disc", "square", "cross")]
    strange = [Image.new("RGB", (32, 32), (255, 255, 255)),
               Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))]
    verdicts = classifier.assess(in_distribution + strange, top_k=2)
    assert all(v.status in ("ok", "unsure", "out_of_distribution") for v in verdicts)
    assert sum(v.status == "ok" for v in verdicts[:3]) >= 2
    assert [v.status for v in verdicts[3:]] == ["out_of_distribution"] * 2
    assert "does not look like" in verdicts[3].reason


def test_confidence_floor_makes_the_answer_unsure(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    classifier.ood = None
    verdict = classifier.assess(draw_shape("disc", np.random.default_rng(2)), min_confidence=1.01)[0]
    assert verdict.status == "unsure" and "unsure" in verdict.reason
