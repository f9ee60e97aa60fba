"""The Generate tab over HTTP with a tiny pipeline built in code (the embedded generator is trained separately)."""

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from magic.generation import GenerationSettings, Generator, GeneratorInfo, TinySDConfig, build_pipeline
from magic.generation.adapters import add_lora, load_lora, save_lora
from tests.conftest import free_port

BUILT: dict = {}  # the fixture's pipeline and LoRA folders


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from spaces.generate import create_demo

    folder = tmp_path_factory.mktemp("tiny-sd")
    pipeline = build_pipeline(TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64),
                                           layers_per_block=1, text_encoder="random-tiny", max_prompt_tokens=16))
    pipeline.save_pretrained(folder)
    GeneratorInfo(label_names=["basophil", "eosinophil", "ig"], prompt_template="a {name} cell").save(folder)
    add_lora(pipeline, rank=4)  # a "feedback-tuned" LoRA that visibly changes the images
    torch.manual_seed(0)
    for name, parameter in pipeline.unet.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.5)
    lora = save_lora(pipeline, tmp_path_factory.mktemp("tiny-lora")).parent
    for name, parameter in pipeline.unet.named_parameters():  # another LoRA, basophils' own
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.5)
    class_loras = tmp_path_factory.mktemp("tiny-class-loras")
    save_lora(pipeline, class_loras / "basophil")
    BUILT.update(pipeline=folder, basophil_lora=class_loras / "basophil")
    demo = create_demo(Generator.from_pretrained(folder), model_id=str(folder), feedback_lora=str(lora),
                       class_loras=str(class_loras)).queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            show_error=True)
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()


def test_text_to_image_returns_the_requested_number_of_images(client):
    gallery = client.predict("basophil", "text-to-image", None, 3, 0.3, 2.0, 2, 2, api_name="/generate")
    assert len(gallery) == 2
    assert Image.open(gallery[0]["image"]).size == (32, 32) and "seed 3" in gallery[0]["caption"]


def test_same_seed_gives_the_same_image_over_http(client):
    first = client.predict("ig", "text-to-image", None, 9, 0.3, 2.0, 2, 1, api_name="/generate")
    second = client.predict("ig", "text-to-image", None, 9, 0.3, 2.0, 2, 1, api_name="/generate")
    assert Image.open(first[0]["image"]).tobytes() == Image.open(second[0]["image"]).tobytes()


def test_the_feedback_tuned_generator_is_the_default_and_can_be_turned_off(client):
    default = client.predict("ig", "text-to-image", None, 5, 0.3, 2.0, 2, 1, api_name="/generate")
    tuned = client.predict("ig", "text-to-image", None, 5, 0.3, 2.0, 2, 1, True, api_name="/generate")
    untuned = client.predict("ig", "text-to-image", None, 5, 0.3, 2.0, 2, 1, False, api_name="/generate")
    assert default[0]["caption"] == tuned[0]["caption"] == "ig · feedback-tuned · seed 5"
    assert untuned[0]["caption"] == "ig · seed 5"
    pixels = [Image.open(gallery[0]["image"]).tobytes() for gallery in (default, tuned, untuned)]
    assert pixels[0] == pixels[1] != pixels[2]  # the LoRA is what differs


def test_a_condition_with_its_own_lora_is_drawn_with_it_by_default(client):
    """CytoDiff's per-class LoRA: basophils (which have one) are drawn with it instead of the feedback LoRA, as a
    pipeline with only that LoRA loaded draws them; unticked, the feedback-tuned generator draws them again."""
    default = client.predict("basophil", "text-to-image", None, 5, 0.3, 2.0, 2, 1, api_name="/generate")
    own = client.predict("basophil", "text-to-image", None, 5, 0.3, 2.0, 2, 1, True, True, api_name="/generate")
    tuned = client.predict("basophil", "text-to-image", None, 5, 0.3, 2.0, 2, 1, True, False, api_name="/generate")
    plain = client.predict("basophil", "text-to-image", None, 5, 0.3, 2.0, 2, 1, False, False, api_name="/generate")
    assert default[0]["caption"] == own[0]["caption"] == "basophil · basophil LoRA · seed 5"
    assert tuned[0]["caption"] == "basophil · feedback-tuned · seed 5" and plain[0]["caption"] == "basophil · seed 5"
    pixels = [Image.open(gallery[0]["image"]).tobytes() for gallery in (default, own, tuned, plain)]
    assert pixels[0] == pixels[1] and len(set(pixels[1:])) == 3
    alone = Generator.from_pretrained(BUILT["pipeline"])
    load_lora(alone.pipeline, BUILT["basophil_lora"])
    expected = alone.text_to_image("a basophil cell", GenerationSettings(steps=2, guidance=2.0, seed=5))[0]
    assert Image.open(own[0]["image"]).convert("RGB").tobytes() == expected.convert("RGB").tobytes()
    # a condition without a LoRA of its own is unaffected by the option
    with_option = client.predict("ig", "text-to-image", None, 5, 0.3, 2.0, 2, 1, True, True, api_name="/generate")
    without = client.predict("ig", "text-to-image", None, 5, 0.3, 2.0, 2, 1, True, False, api_name="/generate")
    assert Image.open(with_option[0]["image"]).tobytes() == Image.open(without[0]["image"]).tobytes()
    assert with_option[0]["caption"] == "ig · feedback-tuned · seed 5"


def test_image_to_image_needs_an_image_and_uses_it(client, tmp_path):
    with pytest.raises(AppError, match="Upload an image first"):
        client.predict("eosinophil", "image-to-image", None, 0, 0.5, 2.0, 2, 1, api_name="/generate")
    path = tmp_path / "source.png"
    Image.new("RGB", (40, 40), (200, 120, 160)).save(path)
    gallery = client.predict("eosinophil", "image-to-image", handle_file(str(path)), 0, 0.5, 2.0, 2, 1,
                             api_name="/generate")
    assert len(gallery) == 1


def test_unknown_condition_and_out_of_range_settings_are_refused(client):
    with pytest.raises(AppError, match="not in the list of choices|condition must be one of"):
        client.predict("dragon", "text-to-image", None, 0, 0.3, 2.0, 2, 1, api_name="/generate")
    with pytest.raises(AppError, match="greater than maximum"):
        client.predict("ig", "text-to-image", None, 0, 0.3, 2.0, 5000, 1, api_name="/generate")


def test_only_the_generators_own_classes_are_offered(client):
    with pytest.raises(AppError, match="not in the list of choices|condition must be one of"):
        client.predict("platelet", "text-to-image", None, 0, 0.3, 2.0, 2, 1, api_name="/generate")


def test_generate_with_feedback_reports_every_round_over_http(client):
    gallery, plot, reports = client.predict("ig", 4, 2.0, 2, 2, 2, "rft", api_name="/generate_with_feedback")
    assert [round_["round"] for round_ in reports["rounds"]] == [0, 1, 2]
    assert reports["rounds"][2]["training"]["method"] == "rft" and reports["evaluator"].startswith("embedded")
    assert len(gallery) == 2 and "ig · seed 4 · " in gallery[0]["caption"] and "criteria" in gallery[0]["caption"]
    assert len(reports["verdicts"]) == 2 and all(len(v["scores"]) == 5 for v in reports["verdicts"])
    data = plot.get("value", plot)  # the plot's PlotData: columns + rows
    rows = [dict(zip(data["columns"], row)) for row in data["data"]]
    assert len(rows) == 6 and {row["round"] for row in rows} == {0, 1, 2}  # two measures per round
    mean_scores = [row["value"] for row in rows if row["measure"].startswith("mean checklist score")]
    assert mean_scores == [r["evaluator_mean_score"] for r in reports["rounds"]]


def test_generate_with_feedback_from_the_classifier_over_http(client):
    gallery, plot, reports = client.predict("basophil", 1, 2.0, 2, 1, 2, "dpo", "classifier",
                                            api_name="/generate_with_feedback")
    assert reports["evaluator"].startswith("classifier:wbc-classifier-")  # the embedded blood-cell classifier
    verdicts = reports["verdicts"]
    assert len(verdicts) == 2 and all(len(v["scores"]) == 5 for v in verdicts)
    assert all(v["scores"] == sorted(v["scores"], reverse=True) for v in verdicts)  # graded: p >= 0.2 ... 0.95
    assert all("probability of at least" in v["items"][0] for v in verdicts)
    data = plot.get("value", plot)
    assert {row[data["columns"].index("measure")] for row in data["data"]} >= {"mean classifier score (0-5)"}
    assert [r["round"] for r in reports["rounds"]] == [0, 1] and "criteria" in gallery[0]["caption"]


@pytest.mark.parametrize("rounds, per_round, method, message", [
    (9, 2, "dpo", "rounds must be 1-3|greater than maximum"),
    (1, 3, "dpo", "even number"),
    (1, 2, "sft", "method must be one of|not in the list of choices"),
])
def test_generate_with_feedback_refuses_bad_settings(client, rounds, per_round, method, message):
    with pytest.raises(AppError, match=message):
        client.predict("ig", 0, 2.0, 2, rounds, per_round, method, api_name="/generate_with_feedback")


def test_generate_with_feedback_refuses_an_unknown_feedback_source(client):
    with pytest.raises(AppError, match="feedback_from must be one of|not in the list of choices"):
        client.predict("ig", 0, 2.0, 2, 1, 2, "dpo", "a dermatologist", api_name="/generate_with_feedback")
