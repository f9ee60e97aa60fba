"""Evaluator feedback on a tiny pipeline built in code: DPO and RFT move the LoRA the right way, the loop's
bookkeeping (fixed measurement seeds, preference files, the saved LoRA) holds, the original generator is untouched."""

import json

import numpy as np
import pytest
import torch

from magic.evaluation import load_evaluator, load_preferences
from magic.evaluation.preferences import PreferencePair, Side, preference
from magic.feedback import Example, FeedbackLoopConfig, FeedbackTrainConfig, run_feedback_loop, train_on_feedback
from magic.feedback.tuning import _denoising_error, _encode, _predict_noise, _prompt_states, _reference_noise
from magic.generation import GenerationSettings, Generator, GeneratorInfo, build_pipeline
from magic.generation.adapters import load_lora
from tests.conftest import draw_shape
from tests.test_generation import TINY

PROMPT = "a disc shape"


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd-feedback")
    build_pipeline(TINY).save_pretrained(folder, safe_serialization=True)
    GeneratorInfo(label_names=["basophil", "ig"], prompt_template="a {name} cell").save(folder)
    return folder


@pytest.fixture(scope="module")
def pair_images():
    rng = np.random.default_rng(3)
    return draw_shape("disc", rng).resize((32, 32)), draw_shape("square", rng).resize((32, 32))


@torch.no_grad()
def _margin(pipeline, winner, loser, samples: int = 64) -> float:
    """Mean of (e_w - e_w_ref) - (e_l - e_l_ref) over fixed noises: negative when the LoRA prefers the winner."""
    generator = torch.Generator().manual_seed(0)
    latents = _encode(pipeline, [winner, loser]).repeat_interleave(samples, 0)
    noise = torch.randn(latents[:samples].shape, generator=generator).repeat(2, 1, 1, 1)
    timesteps = torch.randint(0, 1000, (samples,), generator=generator).repeat(2)
    noisy = pipeline.scheduler.add_noise(latents, noise, timesteps)
    states = _prompt_states(pipeline, [PROMPT] * 2 * samples)
    model = _denoising_error(pipeline.unet, noisy, timesteps, states, noise, False)
    pipeline.unet.disable_adapters()
    reference = _denoising_error(pipeline.unet, noisy, timesteps, states, noise, False)
    pipeline.unet.enable_adapters()
    won, lost = (model - reference).chunk(2)
    return float((won - lost).mean())


def test_dpo_makes_the_lora_prefer_the_winner(pipeline_dir, pair_images):
    pipeline = Generator.from_pretrained(pipeline_dir).pipeline
    winner, loser = pair_images
    pair = PreferencePair(a=Side("w.png", 4), b=Side("l.png", 1), win_a=True, win_b=False, rule="higher wins",
                          prompt=PROMPT)
    history = train_on_feedback(pipeline, FeedbackTrainConfig(method="dpo", steps=40, batch_size=8, lr=1e-3,
                                                              beta=5000.0, mixed_precision=False),
                                pairs=[(pair, winner, loser)])
    assert history[-1]["pairs"] == 1 and np.isfinite(history[-1]["loss"])
    assert _margin(pipeline, winner, loser) < 0 < _margin(pipeline, loser, winner)


def test_gradient_checkpointing_trains_the_same_lora_and_is_switched_off_after(pipeline_dir, pair_images):
    winner, loser = pair_images
    pair = PreferencePair(a=Side("w.png", 4), b=Side("l.png", 1), win_a=True, win_b=False, rule="higher wins",
                          prompt=PROMPT)
    loras = {}
    for checkpointing in (False, True):
        pipeline = Generator.from_pretrained(pipeline_dir).pipeline
        config = FeedbackTrainConfig(method="dpo", steps=3, batch_size=4, lr=1e-3, mixed_precision=False,
                                     gradient_checkpointing=checkpointing)
        train_on_feedback(pipeline, config, pairs=[(pair, winner, loser)])
        assert not pipeline.unet.is_gradient_checkpointing
        loras[checkpointing] = {name: p.detach().clone() for name, p in pipeline.unet.named_parameters()
                                if "lora_" in name}
    assert loras[False].keys() == loras[True].keys() and loras[False]
    moved = max(float(p.abs().max()) for name, p in loras[False].items() if "lora_B" in name)
    assert moved > 0  # the LoRA trained (its B matrices start at zero)
    for name, weight in loras[False].items():
        torch.testing.assert_close(loras[True][name], weight, rtol=1e-4, atol=1e-6)


@torch.no_grad()
def _drift(pipeline, image, prompt: str, samples: int = 64) -> float:
    """Mean squared difference between the LoRA model's and the reference's noise predictions for ``prompt``."""
    generator = torch.Generator().manual_seed(1)
    latents = _encode(pipeline, [image]).repeat(samples, 1, 1, 1)
    timesteps = torch.randint(0, 1000, (samples,), generator=generator)
    noisy = pipeline.scheduler.add_noise(latents, torch.randn(latents.shape, generator=generator), timesteps)
    states = _prompt_states(pipeline, [prompt] * samples)
    model = _predict_noise(pipeline.unet, noisy, timesteps, states, False)
    return float((model - _reference_noise(pipeline.unet, noisy, timesteps, states, False)).pow(2).mean())


def test_anchors_keep_a_condition_without_signal_near_the_reference(pipeline_dir, pair_images):
    winner, loser = pair_images
    pair = PreferencePair(a=Side("w.png", 4), b=Side("l.png", 1), win_a=True, win_b=False, rule="higher wins",
                          prompt=PROMPT)
    other = "a ring shape"  # a condition whose pairs all lost: DPO has nothing to say about it
    drifts = {}
    for weight in (0.0, 1.0):
        pipeline = Generator.from_pretrained(pipeline_dir).pipeline
        history = train_on_feedback(
            pipeline, FeedbackTrainConfig(method="dpo", steps=30, batch_size=8, lr=1e-3, beta=5000.0,
                                          anchor_weight=weight, mixed_precision=False),
            pairs=[(pair, winner, loser)], anchors=[Example(loser, other)])
        assert ("anchor_drift" in history[-1]) == (weight > 0)
        assert _margin(pipeline, winner, loser) < 0  # the preference is still learnt
        drifts[weight] = _drift(pipeline, loser, other)
    assert drifts[1.0] < 0.5 * drifts[0.0]
    with pytest.raises(ValueError, match="anchor_weight must be >= 0"):
        FeedbackTrainConfig(anchor_weight=-1.0)


def test_rft_fits_the_rewarded_image_better_than_the_unrewarded_one(pipeline_dir, pair_images):
    pipeline = Generator.from_pretrained(pipeline_dir).pipeline
    good, bad = pair_images
    train_on_feedback(pipeline, FeedbackTrainConfig(method="rft", steps=40, batch_size=2, lr=1e-3, temperature=0.1,
                                                    mixed_precision=False),
                      examples=[Example(good, PROMPT, 1.0), Example(bad, PROMPT, 0.0)])
    assert _margin(pipeline, good, bad) < 0


def test_pairs_without_a_winner_are_refused_with_advice(pipeline_dir, pair_images):
    pipeline = Generator.from_pretrained(pipeline_dir).pipeline
    win_a, win_b, rule = preference(1, 2)
    pair = PreferencePair(a=Side("a.png", 1), b=Side("b.png", 2), win_a=win_a, win_b=win_b, rule=rule, prompt=PROMPT)
    with pytest.raises(ValueError, match="both lose.*rft"):
        train_on_feedback(pipeline, FeedbackTrainConfig(method="dpo", steps=1), pairs=[(pair, *pair_images)])


def test_feedback_loop_reports_each_round_and_its_lora_round_trips(pipeline_dir, tmp_path):
    generator = Generator.from_pretrained(pipeline_dir)
    before = generator.text_to_image("a basophil cell", GenerationSettings(steps=3, seed=0))
    tuned = generator.clone()
    config = FeedbackLoopConfig(rounds=2, samples_per_condition=2, eval_per_condition=2, steps=3, guidance=3.0,
                                train=FeedbackTrainConfig(method="rft", steps=3, batch_size=4, lr=1e-3))
    judge_log = []
    result = run_feedback_loop(tuned, load_evaluator("embedded"), config, output=tmp_path / "loop",
                               on_round=judge_log.append)

    assert [report.round for report in result.rounds] == [0, 1, 2] == [report.round for report in judge_log]
    assert all(0 <= report.evaluator_mean_score <= 5 for report in result.rounds)
    assert result.rounds[1].training["method"] == "rft" and set(result.rounds[0].per_condition_score) == {
        "basophil", "ig"}
    assert len(result.images) == 4 and [v.condition_id for v in result.verdicts] == ["basophil"] * 2 + ["ig"] * 2
    pairs = load_preferences(tmp_path / "loop" / "round2" / "preferences.json")
    assert len(pairs) == 2 and all((tmp_path / "loop" / pair.a.image).is_file() for pair in pairs)
    training = result.rounds[2].training  # which conditions gave the round no direction, from its own pairs
    assert {c: sum(rules.values()) for c, rules in training["rules_per_condition"].items()} == {"basophil": 1, "ig": 1}
    assert training["conditions_without_signal"] == [pair.group for pair in pairs if pair.rule == "both lose"]
    assert training["anchored"] == []  # anchors are a DPO term, off by default
    from magic.publish import check_publishable

    assert check_publishable(tmp_path / "loop" / "lora") == "model"  # carded: publishable as it is
    # no catalog given: the one that names the generator's classes judged them, and the report says which
    assert json.loads((tmp_path / "loop" / "report.json").read_text())["config"]["catalog"] == "pbc"
    # every round's LoRA is kept (pick another round, or resume from it); the last one is lora/
    from safetensors.torch import load_file

    weights = {name: load_file(tmp_path / "loop" / name / "pytorch_lora_weights.safetensors")
               for name in ("round1/lora", "round2/lora", "lora")}
    assert weights["round2/lora"].keys() == weights["lora"].keys() == weights["round1/lora"].keys()
    assert all(torch.equal(weights["round2/lora"][k], weights["lora"][k]) for k in weights["lora"])
    assert not all(torch.equal(weights["round1/lora"][k], weights["lora"][k]) for k in weights["lora"])
    report = json.loads((tmp_path / "loop" / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2] and report["evaluator"].startswith("embedded")

    # the original is untouched; the saved LoRA on a fresh copy reproduces the tuned generator exactly
    settings = GenerationSettings(steps=3, seed=0)
    assert np.array_equal(np.asarray(before[0]), np.asarray(generator.text_to_image("a basophil cell", settings)[0]))
    fresh = Generator.from_pretrained(pipeline_dir)
    load_lora(fresh.pipeline, tmp_path / "loop" / "lora")
    assert np.array_equal(np.asarray(tuned.text_to_image("a basophil cell", settings)[0]),
                          np.asarray(fresh.text_to_image("a basophil cell", settings)[0]))


def test_loop_refuses_conditions_the_generator_does_not_know(pipeline_dir):
    with pytest.raises(ValueError, match="not trained on"):
        run_feedback_loop(Generator.from_pretrained(pipeline_dir), load_evaluator("embedded"),
                          FeedbackLoopConfig(conditions=["dragon"], rounds=0, samples_per_condition=2))
    with pytest.raises(ValueError, match="Catalog 'ham10000' has no checklist for \\['basophil'"):
        run_feedback_loop(Generator.from_pretrained(pipeline_dir), load_evaluator("embedded"),
                          FeedbackLoopConfig(catalog="ham10000", rounds=0, samples_per_condition=2))
    shapes = Generator.from_pretrained(pipeline_dir)
    shapes.info = GeneratorInfo(label_names=["disc", "square"], prompt_template="a {name} shape")
    with pytest.raises(ValueError, match="No shipped catalog names every class .*disc, square.*--catalog"):
        run_feedback_loop(shapes, load_evaluator("embedded"), FeedbackLoopConfig(rounds=0, samples_per_condition=2))
    with pytest.raises(ValueError, match="even"):
        FeedbackLoopConfig(samples_per_condition=3)


def test_loop_can_optimise_a_classifier_evaluator_but_not_measure_with_it(pipeline_dir, tmp_path):
    from magic.classifiers import load_classifier
    from magic.hub import WEIGHTS_DIR

    wbc = WEIGHTS_DIR / "wbc-classifier"
    evaluator = load_evaluator(f"classifier:{wbc}")
    config = FeedbackLoopConfig(rounds=1, samples_per_condition=2, eval_per_condition=2, steps=3, guidance=3.0,
                                train=FeedbackTrainConfig(method="rft", steps=2, batch_size=4, lr=1e-3))
    with pytest.raises(ValueError, match="classifier the loop optimises"):
        run_feedback_loop(Generator.from_pretrained(pipeline_dir), evaluator, config, judge=load_classifier(wbc))
    result = run_feedback_loop(Generator.from_pretrained(pipeline_dir), evaluator, config,
                               heldout=load_evaluator("embedded"), output=tmp_path / "loop")
    assert [v.backend for v in result.verdicts] == ["classifier"] * 4
    pairs = load_preferences(tmp_path / "loop" / "round1" / "preferences.json")
    assert {pair.judge for pair in pairs} == {evaluator.backend_id} and len(pairs) == 2
    assert all(report.heldout_mean_score is not None for report in result.rounds)
