"""Saliency, calibration and the out-of-distribution / unsure answers of a classifier."""

import numpy as np
import torch
from PIL import Image

from magic.classifiers import load_classifier
from magic.classifiers.explain import grad_cam, overlay
from magic.classifiers.ood import OODDetector, fit_feature_distance
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
    assert isinstance(classifier.ood, OODDetector) and classifier.ood.style is not None
    classifier.save_pretrained(tmp_path / "again")
    reloaded = load_classifier(tmp_path / "again")
    features = torch.randn(5, classifier.ood.semantic.mean.shape[0])
    style = torch.randn(5, classifier.ood.style.mean.shape[0])
    assert torch.allclose(classifier.ood.score(features, style), reloaded.ood.score(features, style))
    assert float(reloaded.ood.semantic.threshold) == float(classifier.ood.semantic.threshold)
    assert float(reloaded.ood.semantic.residual_threshold) == float(classifier.ood.semantic.residual_threshold)


def test_first_format_detector_files_still_load(tiny_classifier_dir, tmp_path):
    from safetensors.torch import save_file

    semantic = load_classifier(tiny_classifier_dir).ood.semantic
    old = {name: value for name, value in semantic.tensors().items() if name != "residual_threshold"}
    save_file(old, tmp_path / "ood.safetensors")
    loaded = OODDetector.load(tmp_path)
    assert loaded.style is None and float(loaded.semantic.residual_threshold) == float("inf")
    features = torch.randn(3, semantic.mean.shape[0])
    assert torch.allclose(loaded.score(features), semantic.distance(features) / semantic.threshold)


def test_style_check_flags_a_different_kind_of_image(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    rng = np.random.default_rng(5)
    shapes = [draw_shape(kind, rng) for kind in ("disc", "square", "cross")]
    pixels = classifier.preprocess_images(shapes)
    inverted = classifier.preprocess_images([Image.eval(image, lambda v: 255 - v) for image in shapes])
    own = classifier.ood.style.score(classifier.style_features(pixels))
    other = classifier.ood.style.score(classifier.style_features(inverted))
    assert other.min() > 1 and own.max() < other.min()


def test_detector_separates_a_shifted_cloud():
    rng = torch.Generator().manual_seed(0)
    train = torch.randn(400, 16, generator=rng)
    labels = (train[:, 0] > 0).long()
    val = torch.randn(200, 16, generator=rng)
    detector = fit_feature_distance(train, labels, val, num_classes=2, dims=8, quantile=0.95)
    assert detector.is_outlier(val).float().mean() <= 0.11  # two checks at the 95th percentile each
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
    assert "blank" in verdicts[3].reason and "noise" in verdicts[4].reason


def test_feature_detector_flags_what_the_pixel_gate_lets_through(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    rng = np.random.default_rng(4)
    stripes = Image.fromarray(np.kron(rng.integers(0, 255, (4, 1, 3)), np.ones((8, 32, 1))).astype(np.uint8))
    verdict = classifier.assess(stripes)[0]
    assert verdict.ood_score is not None and verdict.ood_score > 1 and "out-of-distribution score" in verdict.reason


def test_pixel_gate_passes_real_looking_images_and_names_blank_and_noise():
    from magic.classifiers.ood import pixel_gate

    rng = np.random.default_rng(0)
    assert pixel_gate(draw_shape("disc", rng)) == ""
    assert "blank" in pixel_gate(Image.new("RGB", (64, 64), (200, 180, 190)))
    assert "noise" in pixel_gate(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))


def test_confidence_floor_makes_the_answer_unsure(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    classifier.ood = None
    verdict = classifier.assess(draw_shape("disc", np.random.default_rng(2)), min_confidence=1.01)[0]
    assert verdict.status == "unsure" and "unsure" in verdict.reason
