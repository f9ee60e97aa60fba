"""Checklist evaluators: prompt and parsing, retries, the verdict cache, preferences, the embedded evaluator's
save/load round trip, and the OpenAI-compatible backend over real HTTP against the project's own server."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from magic.evaluation import (
    ChatEvaluator,
    Checklist,
    EvaluationError,
    Evaluator,
    MalformedAnswerError,
    Verdict,
    VerdictCache,
    build_prompt,
    format_answer,
    load_evaluator,
    load_preferences,
    make_pairs,
    parse_answer,
    parse_prompt,
    parse_spec,
    preference,
    save_preferences,
)
from magic.hub import WEIGHTS_DIR
from tests.conftest import free_port

EMBEDDED = WEIGHTS_DIR / "checklist-evaluator"
BASOPHIL = Checklist.from_catalog("pbc", "basophil")


def _cell(kind: str = "lymphocyte", seed: int = 0) -> Image.Image:
    from scripts.make_examples import _cell as draw

    return draw(kind, seed)


# ---------------------------------------------------------------------------------------------- prompt and parsing


def test_prompt_lists_the_checklist_and_asks_for_the_papers_list_format():
    prompt = build_prompt(BASOPHIL)
    assert "Evaluate the image against the following checklist" in prompt
    assert "[1, 0, 1, 0, 0]" in prompt and "0 for every item" in prompt
    condition, items = parse_prompt(prompt)
    assert condition == "Basophil" and items == list(BASOPHIL.items)


@pytest.mark.parametrize("answer, scores", [
    ("[1, 0, 1, 0, 0]", [1, 0, 1, 0, 0]),
    ("Verdict:\n[1,1,1,1,1]\n1. big\n2. lobed", [1, 1, 1, 1, 1]),
    ('```json\n["1", "0", "0", "1", "0"]\n```', [1, 0, 0, 1, 0]),
    ("[true, false, true, true, false]", [1, 0, 1, 1, 0]),
    ("first [1, 2] then [0, 0, 0, 0, 1]", [0, 0, 0, 0, 1]),
])
def test_parse_answer_reads_the_first_valid_list(answer, scores):
    parsed, reasons = parse_answer(answer, 5)
    assert parsed == scores and len(reasons) == 5


def test_parse_answer_keeps_numbered_reasons():
    scores, reasons = parse_answer(format_answer([1, 0, 1, 0, 0], ["a", "b", "c", "d", "e"]), 5)
    assert scores == [1, 0, 1, 0, 0] and reasons == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("answer", ["", "   ", "I cannot evaluate medical images.", "[1, 0, 1]",
                                    "[1, 0, 2, 0, 0]", "[yes, no, yes, no, no]", "[1, 0, 1, 0, 0, 1]"])
def test_malformed_answers_raise_and_are_never_zeros(answer):
    with pytest.raises(MalformedAnswerError):
        parse_answer(answer, 5)


class ScriptedChat(ChatEvaluator):
    """A chat backend double that replays scripted answers (for the retry logic only; no model is involved)."""

    name = "scripted"

    def __init__(self, answers, **kwargs):
        super().__init__(**kwargs)
        self.answers, self.calls = list(answers), 0

    def complete(self, image, prompt, attempt=0):
        assert attempt == self.calls
        self.calls += 1
        return self.answers.pop(0)


def test_malformed_answer_is_retried_then_used():
    chat = ScriptedChat(["sorry", "[1, 0, 1, 1, 0]\n1. ok"], malformed_retries=2)
    verdict = chat.evaluate(_cell(), BASOPHIL)
    assert chat.calls == 2 and verdict.scores == [1, 0, 1, 1, 0] and verdict.score == 3
    assert verdict.rationales[0] == "ok" and verdict.checklist_version == "pbc@1.0.0"


def test_malformed_answers_after_all_retries_raise_an_error_naming_the_answer():
    chat = ScriptedChat(["nope", "[1, 0]", "still no"], malformed_retries=2)
    with pytest.raises(EvaluationError, match="after 3 attempts.*still no"):
        chat.evaluate(_cell(), BASOPHIL)
    assert chat.calls == 3


def test_all_zeros_for_an_invalid_image_is_a_valid_answer():
    chat = ScriptedChat(["[0, 0, 0, 0, 0]\nThe image does not show a valid blood cell."])
    verdict = chat.evaluate(Image.new("RGB", (64, 64), "white"), BASOPHIL)
    assert verdict.scores == [0] * 5 and not verdict.valid_image


# ---------------------------------------------------------------------------------------------- cache


class CountingEvaluator(Evaluator):
    name, version = "counting", "1"

    def __init__(self, cache=None):
        super().__init__(cache)
        self.calls = 0
        self.lock = threading.Lock()

    def judge(self, image, checklist):
        with self.lock:
            self.calls += 1
        return Verdict(scores=[1, 0, 0, 0, 0], rationales=["r"] * 5, condition_id=checklist.condition_id,
                       checklist_version=checklist.version, backend=self.name, backend_version=self.version)


def test_cache_hit_does_not_call_the_backend_again_and_survives_a_restart(tmp_path):
    path = tmp_path / "verdicts.sqlite"
    evaluator = CountingEvaluator(VerdictCache(path))
    image = _cell()
    first = evaluator.evaluate(image, BASOPHIL)
    again = evaluator.evaluate(image.copy(), "pbc:basophil")  # same pixels, another object
    assert evaluator.calls == 1 and not first.cached and again.cached and again.scores == first.scores
    evaluator.evaluate(image, "pbc:eosinophil")  # another checklist: judged
    evaluator.evaluate(_cell(seed=1), BASOPHIL)  # another image: judged
    assert evaluator.calls == 3
    restarted = CountingEvaluator(VerdictCache(path))
    assert restarted.evaluate(image, BASOPHIL).cached and restarted.calls == 0
    edited = Checklist(BASOPHIL.condition_id, BASOPHIL.condition_name, BASOPHIL.items[:4] + ("Granules: none.",),
                       version=BASOPHIL.version)
    restarted.evaluate(image, edited)  # same version string but edited text: judged again
    assert restarted.calls == 1


def test_cache_is_safe_across_threads(tmp_path):
    evaluator = CountingEvaluator(VerdictCache(tmp_path / "v.sqlite"))
    images = [_cell(seed=seed) for seed in range(6)]
    threads = [threading.Thread(target=evaluator.evaluate_batch, args=(images, BASOPHIL)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(evaluator.cache) == 6
    before = evaluator.calls
    assert all(verdict.cached for verdict in evaluator.evaluate_batch(images, BASOPHIL))
    assert evaluator.calls == before


# ---------------------------------------------------------------------------------------------- preferences


@pytest.mark.parametrize("a, b, expected", [
    (0, 2, (False, False, "both lose")), (2, 2, (False, False, "both lose")),
    (5, 5, (True, True, "both win")), (3, 3, (True, True, "both win")), (4, 4, (True, True, "both win")),
    (4, 1, (True, False, "higher wins")), (2, 3, (False, True, "higher wins")), (3, 5, (False, True, "higher wins")),
])
def test_preference_rules_follow_the_paper(a, b, expected):
    assert preference(a, b) == expected


def test_preferences_file_round_trip_and_hand_written_expert_labels(tmp_path):
    records = [{"image": f"{i}.png", "score": s, "group": "g", "condition_id": "basophil"}
               for i, s in enumerate([4, 1, 2, 2, 5, 5])]
    pairs = make_pairs(records, judge="counting@1")
    assert [(p.win_a, p.win_b, p.rule) for p in pairs] == [
        (True, False, "higher wins"), (False, False, "both lose"), (True, True, "both win")]
    path = save_preferences(pairs, tmp_path / "prefs.json")
    assert load_preferences(path) == pairs
    expert = tmp_path / "expert.json"
    expert.write_text(json.dumps({"format": "magic-preferences", "version": 1, "pairs": [
        {"a": {"image": "x.png"}, "b": {"image": "y.png"}, "win_a": False, "win_b": True, "judge": "expert:AB"},
        {"a": {"image": "x.png", "score": 3}, "b": {"image": "z.png", "score": 1}}]}))
    loaded = load_preferences(expert)
    assert (loaded[0].rule, loaded[0].win_b) == ("expert", True) and loaded[1].rule == "higher wins"
    expert.write_text(json.dumps({"format": "magic-preferences", "version": 1, "pairs": [{"a": {"image": "x"},
                                                                                          "b": {"image": "y"}}]}))
    with pytest.raises(ValueError, match="win_a and win_b"):
        load_preferences(expert)
    with pytest.raises(ValueError):
        preference(6, 1)


# ---------------------------------------------------------------------------------------------- factory


def test_specs_and_unknown_backends():
    assert parse_spec("openai:gpt-4o?base_url=http://x/v1&max_concurrency=2") == (
        "openai", "gpt-4o", {"base_url": "http://x/v1", "max_concurrency": 2})
    assert parse_spec("weights/checklist-evaluator") == ("embedded", "weights/checklist-evaluator", {})
    assert parse_spec("embedded") == ("embedded", "", {})
    with pytest.raises(ValueError, match="Name the model"):
        load_evaluator("openai:")
    with pytest.raises(FileNotFoundError):
        load_evaluator("embedded:no-such-org/no-such-model")


def test_remote_openai_endpoint_needs_a_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("MAGIC_TEST_KEY", raising=False)
    with pytest.raises(EvaluationError, match="MAGIC_TEST_KEY"):
        load_evaluator("openai:gpt-4o?api_key_env=MAGIC_TEST_KEY")


# ---------------------------------------------------------------------------------------------- embedded evaluator


@pytest.fixture(scope="module")
def embedded():
    if not (EMBEDDED / "config.json").is_file():
        pytest.skip("weights/checklist-evaluator is not built")
    return load_evaluator(f"embedded:{EMBEDDED}")


def test_embedded_verdict_has_one_score_and_reason_per_item(embedded):
    verdict = embedded.evaluate(_cell(), "pbc:lymphocyte")
    assert len(verdict.scores) == 5 and len(verdict.rationales) == 5 and verdict.backend == "embedded"
    assert verdict.checklist_version == "pbc@1.0.0" and verdict.backend_version.startswith("checklist-evaluator-")
    assert all("threshold" in reason for reason in verdict.rationales) and 0 <= verdict.score <= 5


def test_embedded_save_load_round_trip_gives_the_same_scores(embedded, tmp_path):
    from magic.evaluation import EmbeddedEvaluator

    images = [_cell(kind, seed) for seed, kind in enumerate(["basophil", "lymphocyte", "neutrophil"])]
    checklists = [Checklist.from_catalog("pbc", c) for c in ("basophil", "lymphocyte", "neutrophil")]
    before = embedded.scorer.score(images, [list(c.items) for c in checklists])
    embedded.scorer.save_pretrained(tmp_path / "copy", dtype=None)
    copy = EmbeddedEvaluator.from_pretrained(tmp_path / "copy")
    after = copy.scorer.score(images, [list(c.items) for c in checklists])
    for first, second in zip(before, after):
        assert [i.probability for i in first["items"]] == pytest.approx([i.probability for i in second["items"]],
                                                                         abs=1e-6)
        assert first["invalid_reason"] == second["invalid_reason"]
    assert [v.scores for v in copy.evaluate_batch(images, checklists)] == \
        [v.scores for v in embedded.evaluate_batch(images, checklists)]


def test_embedded_gives_all_zeros_to_images_unlike_its_training_data(embedded):
    rng = np.random.default_rng(0)
    for image in (Image.new("RGB", (128, 128), "white"),
                  Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))):
        verdict = embedded.evaluate(image, "pbc:neutrophil")
        assert not verdict.valid_image and verdict.scores == [0] * 5 and "not a valid image" in verdict.rationales[0]


def test_embedded_scores_unseen_checklist_text_with_the_text_tower(embedded):
    custom = Checklist("custom", "Custom", ("Cell size: a large cell.", "Nucleus shape: round.", "Chromatin: dense.",
                                            "Cytoplasm colour: blue.", "Granules: none."))
    verdict = embedded.evaluate(_cell(), custom)
    assert len(verdict.scores) == 5 and "unseen item text" in verdict.rationales[0]


# ---------------------------------------------------------------------------------------------- OpenAI backend


@pytest.fixture(scope="module")
def server(embedded):
    """``python -m magic serve-evaluator`` (the project's OpenAI-compatible server) on a loopback port."""
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "MAGIC_SERVER_KEY": "sk-test-secret-123"}
    process = subprocess.Popen([sys.executable, "-m", "magic", "serve-evaluator", "--model", str(EMBEDDED),
                                "--host", "127.0.0.1", "--port", str(port), "--api-key-env", "MAGIC_SERVER_KEY"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 401:  # up, and asking for the key
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"serve-evaluator did not start: {process.stderr.read()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_openai_backend_over_http_agrees_with_the_embedded_evaluator(server, embedded, monkeypatch, caplog):
    monkeypatch.setenv("MAGIC_CLIENT_KEY", "sk-test-secret-123")
    remote = load_evaluator(f"openai:magic-checklist-evaluator?base_url={server}&api_key_env=MAGIC_CLIENT_KEY"
                            "&max_concurrency=2")
    assert remote.list_models() == ["magic-checklist-evaluator"]
    images = [_cell(kind, seed) for seed, kind in enumerate(["basophil", "eosinophil", "platelet"])]
    with caplog.at_level(logging.DEBUG):
        verdicts = remote.evaluate_batch(images, "pbc:eosinophil")
    local = embedded.evaluate_batch(images, "pbc:eosinophil")
    assert [v.scores for v in verdicts] == [v.scores for v in local]
    assert verdicts[0].backend == "openai" and verdicts[0].raw_answer.startswith("[")
    blank = remote.evaluate(Image.new("RGB", (96, 96), "white"), "pbc:eosinophil")
    assert blank.scores == [0] * 5 and not blank.valid_image  # the paper's "invalid image: all zeros"
    assert "sk-test-secret-123" not in repr(remote) and "sk-test-secret-123" not in caplog.text
    remote.close()


def test_wrong_key_is_refused_without_echoing_it(server, monkeypatch, caplog):
    monkeypatch.setenv("MAGIC_CLIENT_KEY", "sk-wrong-key-456")
    remote = load_evaluator(f"openai:m?base_url={server}&api_key_env=MAGIC_CLIENT_KEY&max_retries=0")
    with caplog.at_level(logging.DEBUG), pytest.raises(EvaluationError, match="HTTP 401") as error:
        remote.evaluate(_cell(), BASOPHIL)
    assert "sk-wrong-key-456" not in str(error.value) + caplog.text + repr(remote)


def test_server_refuses_remote_image_urls(server):
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": build_prompt(BASOPHIL)},
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}]}]}
    response = httpx.post(f"{server}/chat/completions", json=body,
                          headers={"Authorization": "Bearer sk-test-secret-123"})
    assert response.status_code == 400 and "data URL" in response.json()["error"]["message"]


def test_transport_errors_are_retried_with_backoff_then_reported(monkeypatch, caplog):
    monkeypatch.setenv("MAGIC_CLIENT_KEY", "sk-never-logged-789")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    remote = load_evaluator(f"openai:m?base_url={dead}&api_key_env=MAGIC_CLIENT_KEY&max_retries=2&backoff=0.01")
    started = time.time()
    with caplog.at_level(logging.DEBUG), pytest.raises(EvaluationError, match="after 3 attempts"):
        remote.evaluate(_cell(), BASOPHIL)
    assert time.time() - started >= 0.03 and caplog.text.count("retrying") == 2
    assert "sk-never-logged-789" not in caplog.text


def test_rate_limits_are_retried(monkeypatch):
    answers = iter([httpx.Response(429, headers={"retry-after": "0"}), httpx.Response(503),
                    httpx.Response(200, json={"choices": [{"message": {"content": "[1, 1, 0, 0, 1]"}}]})])
    remote = load_evaluator("openai:m?base_url=http://127.0.0.1:9/v1&backoff=0.01")
    remote._client = httpx.Client(base_url=remote.base_url, transport=httpx.MockTransport(lambda _: next(answers)))
    assert remote.evaluate(_cell(), BASOPHIL).scores == [1, 1, 0, 0, 1]


def test_cli_evaluate_prints_json(embedded, tmp_path, capsys):
    from magic.cli import main

    path = tmp_path / "cell.png"
    _cell("neutrophil").save(path)
    assert main(["evaluate", "--evaluator", f"embedded:{EMBEDDED}", "--image", str(path), "--catalog", "pbc",
                 "--condition", "neutrophil", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["condition_id"] == "neutrophil" and len(record["scores"]) == 5 and record["score"] == sum(
        record["scores"])
    assert main(["evaluate", "--image", str(path), "--catalog", "pbc", "--condition", "nope"]) == 2


# ---------------------------------------------------------------------------------------------- transformers backend


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny, randomly initialised LLaVA-architecture model + processor built in code and saved to a folder.

    No vision-language weights exist offline here, so this checks the plumbing only (Auto* loading, the chat
    template with image tokens, generate, decode); its answers are noise, never treated as verdicts.
    """
    import torch
    from transformers import (
        BertTokenizerFast,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from magic.generation.components import minilm_folder

    tokenizer = BertTokenizerFast.from_pretrained(minilm_folder())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               chat_template=template, image_token="<image>", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-vlm")
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_transformers_backend_loads_by_id_and_reports_noise_as_an_error(tiny_vlm_dir):
    evaluator = load_evaluator(f"transformers:{tiny_vlm_dir}?max_new_tokens=6&malformed_retries=1")
    inputs = evaluator.inputs(_cell(), build_prompt(BASOPHIL))
    image_token = evaluator.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert inputs["pixel_values"].shape[-2:] == (32, 32) and (inputs["input_ids"] == image_token).sum() == 16
    assert isinstance(evaluator.complete(_cell(), build_prompt(BASOPHIL)), str)
    with pytest.raises(EvaluationError, match="after 2 attempts"):  # random weights never answer a 0/1 list
        evaluator.evaluate(_cell(), BASOPHIL)


# ---------------------------------------------------------------------------------------------- training


TINY_CATALOG = """
name: tiny-shapes
version: 0.1.0
title: Tiny shapes
modality: synthetic test images
source: Drawn by tests/conftest.py.
license: CC0
criteria:
  - {key: size, label: Size}
  - {key: outline, label: Outline}
  - {key: colour, label: Colour}
  - {key: edges, label: Edges}
  - {key: background, label: Background}
conditions:
  - id: disc
    display_name: Disc
    description: A filled circle.
    checklist: {size: Fills most of the image., outline: A round outline., colour: Bright red.,
                edges: Smooth curved edges., background: Dark noisy background.}
  - id: square
    display_name: Square
    description: A filled square.
    checklist: {size: Fills most of the image., outline: A square outline with four corners., colour: Bright green.,
                edges: Straight edges., background: Dark noisy background.}
  - id: cross
    display_name: Cross
    description: Two diagonal strokes.
    checklist: {size: Spans the image corner to corner., outline: An X shape of two thin lines., colour: Blue.,
                edges: Thin straight strokes., background: Dark noisy background.}
"""


def test_train_save_load_and_measure_a_tiny_evaluator(tiny_dataset, tmp_path, monkeypatch):
    from magic.catalog import load_catalog
    from magic.data import load_image_dataset
    from magic.evaluation import EmbeddedEvaluator, train_embedded
    from magic.evaluation.agreement import checklist_agreement, format_table
    from magic.evaluation.card import write_evaluator_card
    from magic.evaluation.embedded_model import ScorerConfig

    monkeypatch.setattr(train_embedded, "FEATURE_CACHE", tmp_path / "features")
    (tmp_path / "tiny-shapes.yaml").write_text(TINY_CATALOG)
    catalog = load_catalog(tmp_path / "tiny-shapes.yaml")
    config = train_embedded.EmbeddedTrainConfig(steps=60, batch_size=16, lr=3e-3)
    scorer, record = train_embedded.train_embedded_evaluator(
        [train_embedded.Domain(str(tiny_dataset), catalog)], config, ScorerConfig(image_size=32), log=lambda _: None)
    assert record["n_items"] == 15 and len(list((tmp_path / "features").glob("*.pt"))) == 2  # train + validation
    folder = scorer.save_pretrained(tmp_path / "tiny-evaluator")
    evaluator = EmbeddedEvaluator.from_pretrained(folder)
    result = checklist_agreement(evaluator, load_image_dataset(tiny_dataset, split="test"), catalog, "tiny")
    assert result.n_images == 18 and result.own_pass_rate > result.other_pass_rate
    assert "disc" in format_table([result])
    (folder / "metrics.json").write_text(json.dumps([result.to_dict()]))
    card = write_evaluator_card(folder).read_text()
    assert "not a medical device" in card and "| tiny [test] | 18 |" in card
