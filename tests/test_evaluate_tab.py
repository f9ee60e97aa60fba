"""The Evaluator tab served on loopback and called over HTTP with gradio_client."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from magic.hub import WEIGHTS_DIR
from tests.conftest import serving

EMBEDDED = WEIGHTS_DIR / "checklist-evaluator"


@pytest.fixture(scope="module")
def client():
    assert (EMBEDDED / "config.json").is_file(), "weights/checklist-evaluator is missing"
    from spaces.evaluate import create_demo

    with serving(create_demo()) as client:
        yield client


def _cell(path, kind="eosinophil"):
    from scripts.make_examples import _cell as draw

    draw(kind, 0).save(path)
    return str(path)


def test_evaluate_over_http_shows_each_item_with_pass_fail_reason_and_score(client, tmp_path):
    score, table, verdict = client.predict(handle_file(_cell(tmp_path / "cell.png")), "pbc", "eosinophil",
                                           "not specified", api_name="/evaluate")
    assert len(verdict["scores"]) == 5 and len(verdict["rationales"]) == 5 and verdict["backend"] == "embedded"
    assert verdict["score"] == sum(verdict["scores"]) and score["label"] == f"{verdict['score']} / 5 criteria met"
    assert "Eosinophil" in table and table.count("| ") >= 5 and ("✅" in table or "❌" in table)
    assert "eosinophil" == verdict["condition_id"] and verdict["checklist_version"] == "pbc@1.0.0"


def test_skin_catalog_and_condition_list(client, tmp_path):
    update = client.predict("ham10000", api_name="/evaluator_conditions")
    assert "melanoma" in str(update)
    _, table, verdict = client.predict(handle_file(_cell(tmp_path / "c.png")), "ham10000", "melanoma",
                                       "darker (Fitzpatrick IV-VI)", api_name="/evaluate")
    assert verdict["checklist_version"].startswith("ham10000@") and "Melanoma" in table


@pytest.mark.parametrize("catalog, condition, message", [
    ("no-such-catalog", "x", "catalog must be one of|not in the list of choices"),
    ("pbc", "melanoma", "condition must be one of"),
])
def test_bad_choices_get_a_clear_error(client, tmp_path, catalog, condition, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(_cell(tmp_path / "cell.png")), catalog, condition, "not specified",
                       api_name="/evaluate")


def test_not_an_image_gets_a_clear_error(client, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a picture")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(path)), "pbc", "basophil", "not specified", api_name="/evaluate")


def test_api_lists_the_documented_endpoint(client):
    assert "/evaluate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_expert_labels_accumulate_per_session_with_kappa_and_a_download(client, tmp_path):
    from magic.evaluation.experts import load_expert_labels

    first = client.predict(handle_file(_cell(tmp_path / "a.png", "neutrophil")), "pbc", "neutrophil", "not specified",
                           [1, 2, 3], "dr-a", api_name="/expert_label")  # item numbers the expert ticked
    assert "on 1 image(s)" in first[0] and "| 5 |" in first[0]
    second = client.predict(handle_file(_cell(tmp_path / "b.png", "lymphocyte")), "pbc", "neutrophil",
                            "not specified", [], "dr-a", api_name="/expert_label")
    assert "on 2 image(s)" in second[0]
    labels = load_expert_labels(second[1])
    assert [label.scores for label in labels] == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert labels[0].rater == "dr-a" and labels[0].checklist_version == "pbc@1.0.0"
    with pytest.raises(AppError, match="not in the list of choices|item numbers from 1 to 5"):
        client.predict(handle_file(_cell(tmp_path / "c.png")), "pbc", "neutrophil", "not specified",
                       [7], "", api_name="/expert_label")


def test_expert_label_documents_item_numbers_as_integers_and_accepts_digit_strings(client, tmp_path):
    from magic.evaluation.experts import load_expert_labels

    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/expert_label"]
    ticked = next(parameter for parameter in info["parameters"] if parameter["parameter_name"] == "ticked")
    assert ticked["type"]["items"] == {"enum": [1, 2, 3, 4, 5], "type": "integer"}
    as_strings = client.predict(handle_file(_cell(tmp_path / "a.png", "neutrophil")), "pbc", "neutrophil",
                                "not specified", ["1", "3"], "", api_name="/expert_label")
    assert load_expert_labels(as_strings[1])[-1].scores == [1, 0, 1, 0, 0]  # appended to this client's session
    for bad in (["7"], ["one"], [0]):
        with pytest.raises(AppError, match="not in the list of choices"):
            client.predict(handle_file(_cell(tmp_path / "b.png")), "pbc", "neutrophil", "not specified",
                           bad, "", api_name="/expert_label")
