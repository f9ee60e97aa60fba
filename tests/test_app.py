"""The composed app served on loopback and called over HTTP with gradio_client, as a script user would."""

import io

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import serving

WBC_CLASSES = {"basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"}


@pytest.fixture(scope="module")
def client():
    from app import create_app

    with serving(create_app()) as client:
        yield client


def _cell_image(path, seed=0):
    from scripts.make_examples import _cell

    _cell("lymphocyte", seed).save(path)
    return path


def _assert_probabilities(outputs, k):
    answer, saliency, checklist, details = outputs
    assert Image.open(saliency).size == (128, 128)  # the overlay is at the uploaded image's size
    assert "Expert checklist" in checklist and len(details["checklist"]) == 5
    assert details["status"] in ("ok", "unsure", "out_of_distribution")
    confidences = {item["label"]: item["confidence"] for item in answer["confidences"]}
    assert len(confidences) == k and set(confidences) <= WBC_CLASSES
    assert answer["label"] in WBC_CLASSES and 0 < sum(confidences.values()) <= 1 + 1e-6
    return confidences


def test_classify_wbc_over_http_returns_top_k(client, tmp_path):
    answer = client.predict(handle_file(str(_cell_image(tmp_path / "cell.png"))), 3, api_name="/classify_wbc")
    confidences = _assert_probabilities(answer, 3)
    assert list(confidences.values()) == sorted(confidences.values(), reverse=True)


def test_api_lists_the_documented_endpoint(client):
    assert "/classify_wbc" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"this is a text file, not a picture", "not an image"),
        ("broken.png", None, "damaged or truncated"),
        ("huge.png", "huge", "megapixels"),
    ],
)
def test_bad_uploads_get_a_clear_error_and_the_server_keeps_serving(client, tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[:4000])
    elif content == "huge":
        Image.new("L", (9000, 9000)).save(path)  # 81 megapixels, a few hundred kB on disk
    else:
        path.write_bytes(content)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), 3, api_name="/classify_wbc")
    answer = client.predict(handle_file(str(_cell_image(tmp_path / "ok.png"))), 2, api_name="/classify_wbc")
    _assert_probabilities(answer, 2)


def test_out_of_range_top_k_is_refused(client, tmp_path):
    with pytest.raises(AppError, match="greater than maximum value 8"):
        client.predict(handle_file(str(_cell_image(tmp_path / "cell.png"))), 50, api_name="/classify_wbc")


def test_missing_image_is_refused(client):
    with pytest.raises(AppError, match="Upload an image first"):
        client.predict(None, 3, api_name="/classify_wbc")


def test_classify_skin_over_http_with_skin_tone(client, tmp_path):
    from scripts.make_examples import _lesion

    path = tmp_path / "lesion.png"
    _lesion("nevus", 0).save(path)
    label, saliency, checklist, details = client.predict(handle_file(str(path)), 2, "darker (Fitzpatrick IV-VI)",
                                                         api_name="/classify_skin")
    assert len(label["confidences"]) == 2 and Image.open(saliency).size == (128, 128)
    assert details["status"] in ("ok", "unsure", "out_of_distribution") and len(details["checklist"]) == 5
    assert "Expert checklist" in checklist and "ham10000" in checklist


def test_unknown_skin_tone_is_refused(client, tmp_path):
    with pytest.raises(AppError, match="skin_tone must be one of|not in the list of choices"):
        client.predict(handle_file(str(_cell_image(tmp_path / "x.png"))), 2, "purple", api_name="/classify_skin")


def test_generate_tab_draws_cells_with_the_embedded_generator(client):
    gallery = client.predict("eosinophil", "text-to-image", None, 5, 0.3, 5.0, 8, 2, api_name="/generate")
    # the embedded generator comes with its feedback LoRA, on by default
    assert [item["caption"] for item in gallery] == ["eosinophil · feedback-tuned · seed 5",
                                                      "eosinophil · feedback-tuned · seed 6"]
    pixels = [np.asarray(Image.open(item["image"]).convert("RGB"), dtype=np.float32) for item in gallery]
    assert all(p.shape == (64, 64, 3) and p.std() > 5 for p in pixels)  # real pictures, not blank or black
    again = client.predict("eosinophil", "text-to-image", None, 5, 0.3, 5.0, 8, 1, api_name="/generate")
    assert np.array_equal(np.asarray(Image.open(again[0]["image"]).convert("RGB"), dtype=np.float32), pixels[0])
    untuned = client.predict("eosinophil", "text-to-image", None, 5, 0.3, 5.0, 8, 1, False, api_name="/generate")
    assert untuned[0]["caption"] == "eosinophil · seed 5"
    assert not np.array_equal(np.asarray(Image.open(untuned[0]["image"]).convert("RGB"), dtype=np.float32), pixels[0])
    # and with its basophil LoRA (CytoDiff, from every real training basophil), on by default for basophils
    basophil = client.predict("basophil", "text-to-image", None, 5, 0.3, 5.0, 8, 1, api_name="/generate")
    tuned = client.predict("basophil", "text-to-image", None, 5, 0.3, 5.0, 8, 1, True, False, api_name="/generate")
    assert basophil[0]["caption"] == "basophil · basophil LoRA · seed 5"
    assert tuned[0]["caption"] == "basophil · feedback-tuned · seed 5"
    assert not np.array_equal(*(np.asarray(Image.open(g[0]["image"]).convert("RGB")) for g in (basophil, tuned)))
