import json

import numpy as np
import pytest
import timm
import torch

from magic.classifiers import (
    TrainConfig,
    create_classifier,
    evaluate_classifier,
    load_classifier,
    nll,
    train_classifier,
)
from magic.classifiers.evaluate import collect_logits
from magic.data import load_image_dataset
from magic.hub import ModelNotFoundError
from tests.conftest import TINY_CLASSES, draw_shape


def _batch(classifier, n=4):
    rng = np.random.default_rng(3)
    return classifier.preprocess_images([draw_shape(kind, rng) for kind in TINY_CLASSES * n])


def test_tiny_training_learns_the_shapes(tiny_classifier_dir, tiny_dataset):
    classifier = load_classifier(tiny_classifier_dir)
    result = evaluate_classifier(classifier, load_image_dataset(tiny_dataset, split="test"), progress=False)
    assert result.n == 18
    assert result.accuracy > 0.5  # chance is 1/3
    assert set(result.per_class_recall) == set(TINY_CLASSES)
    assert np.asarray(result.confusion_matrix).sum() == 18


def test_save_load_round_trip_gives_identical_logits(tiny_classifier_dir, tmp_path):
    classifier = load_classifier(tiny_classifier_dir)
    pixels = _batch(classifier)
    with torch.no_grad():
        before = classifier(pixels)
    classifier.save_pretrained(tmp_path / "again")
    reloaded = load_classifier(tmp_path / "again")
    with torch.no_grad():
        after = reloaded(pixels)
    assert torch.equal(before, after)
    assert reloaded.label_names == classifier.label_names
    assert reloaded.temperature == classifier.temperature
    assert reloaded.preprocess == classifier.preprocess


def test_float16_save_is_half_the_size_and_close(tiny_classifier_dir, tmp_path):
    classifier = load_classifier(tiny_classifier_dir)
    classifier.save_pretrained(tmp_path / "fp32")
    classifier.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "model.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    pixels = _batch(classifier)
    with torch.no_grad():
        assert torch.allclose(classifier(pixels), load_classifier(tmp_path / "fp16")(pixels), atol=5e-2)


def test_timm_local_dir_loads_the_same_model(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    model = timm.create_model(f"local-dir:{tiny_classifier_dir}", pretrained=True).eval()
    pixels = _batch(classifier)
    with torch.no_grad():
        assert torch.allclose(model(pixels), classifier(pixels), atol=1e-6)
    assert model.pretrained_cfg["label_names"] == TINY_CLASSES
    data_config = timm.data.resolve_data_config({}, model=model)
    assert data_config["input_size"] == (3, 32, 32)


def test_config_json_carries_labels_preprocessing_and_temperature(tiny_classifier_dir):
    config = json.loads((tiny_classifier_dir / "config.json").read_text())
    assert config["architecture"] == "test_efficientnet"
    assert config["label_names"] == TINY_CLASSES
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["magic"]["temperature"] > 0
    assert not list(tiny_classifier_dir.glob("*.bin")) and not list(tiny_classifier_dir.glob("*.pt*"))


def test_predict_returns_sorted_top_k_probabilities(tiny_classifier_dir):
    classifier = load_classifier(tiny_classifier_dir)
    rng = np.random.default_rng(0)
    prediction = classifier.predict(draw_shape("disc", rng), top_k=2)[0]
    assert len(prediction.labels) == 2 and prediction.probabilities == sorted(prediction.probabilities, reverse=True)
    full = classifier.predict_proba([draw_shape("disc", rng)])
    assert full.shape == (1, 3) and abs(full.sum() - 1) < 1e-5
    assert len(classifier.predict(draw_shape("disc", rng), top_k=99)[0].labels) == 3


def test_temperature_does_not_increase_validation_nll(tiny_classifier_dir, tiny_dataset):
    classifier = load_classifier(tiny_classifier_dir)
    logits, labels = collect_logits(classifier, load_image_dataset(tiny_dataset, split="validation"), progress=False)
    assert nll(logits, labels, classifier.temperature) <= nll(logits, labels, 1.0) + 1e-6


@pytest.mark.parametrize("balance", ["sampler", "sqrt-sampler", "loss"])
def test_class_balancing_options_train(tiny_dataset, balance):
    data = load_image_dataset(tiny_dataset)
    config = TrainConfig(architecture="test_efficientnet", pretrained=False, image_size=32, max_steps=3,
                         batch_size=8, balance=balance, num_workers=0, device="cpu")
    classifier = train_classifier(config, data["train"])
    assert classifier.info["train_config"]["balance"] == balance


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="balance must be one of"):
        TrainConfig(balance="oversample")
    with pytest.raises(ValueError, match="Unknown timm architecture"):
        create_classifier("not_a_model", ["a", "b"], pretrained=False)
    with pytest.raises(ValueError, match="No offline pretrained weights"):
        create_classifier("test_resnet", ["a", "b"], pretrained=True)


def test_packaged_efficientnet_lite0_weights_load():
    classifier = create_classifier("tf_efficientnet_lite0", ["a", "b"], pretrained=True, image_size=64)
    weights = classifier.model.conv_stem.weight
    assert weights.abs().sum() > 0 and classifier.preprocess.mean == (0.5, 0.5, 0.5)
    assert float(classifier.model.get_classifier().bias.abs().sum()) == 0.0


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_classifier("someone/not-a-model")
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        load_classifier("no-such-model")


def test_embedded_wbc_classifier_loads_offline():
    classifier = load_classifier("magic-suite/wbc-classifier")
    assert classifier.label_names == ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
                                      "neutrophil", "platelet"]
    assert classifier.preprocess.input_size == (3, 96, 96)
