"""Each demo builds into a self-contained Space folder whose app starts and answers over HTTP."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from huggingface_hub import RepoCard
from PIL import Image

from spaces.build import SPACES, build_space
from tests.conftest import free_port

ENDPOINTS = {"wbc": ["/classify_wbc"], "skin": ["/classify_skin"], "evaluate": ["/evaluate"], "diagnose": ["/diagnose"],
             "generate": ["/generate"],
             "suite": ["/classify_wbc", "/classify_skin", "/evaluate", "/diagnose", "/generate"]}


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the Space app exited: {process.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"the Space app did not answer at {url} within {timeout} s")


@pytest.mark.parametrize("name", sorted(SPACES))
def test_built_space_has_front_matter_and_its_app_answers(name, tmp_path):
    folder = build_space(name, tmp_path)
    card = RepoCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.license
    assert card.data.models and card.data.short_description and len(card.data.short_description) <= 60
    assert "not a medical device" in card.text
    assert (folder / "requirements.txt").is_file() and not list(folder.rglob("*.bin"))

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_up(url, process)
        client = Client(url, verbose=False)
        assert set(ENDPOINTS[name]) <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        example = handle_file(str(next((folder / "spaces" / "examples").rglob("*.png"))))
        endpoint = ENDPOINTS[name][0]
        if endpoint == "/evaluate":
            score, table, verdict = client.predict(example, "pbc", "lymphocyte", "not specified", api_name=endpoint)
            assert len(verdict["scores"]) == 5 and "criteria met" in score["label"]
        elif endpoint == "/generate":
            gallery = client.predict("lymphocyte", "text-to-image", None, 0, 0.3, 5.0, 4, 2, api_name=endpoint)
            assert len(gallery) == 2 and all(Image.open(item["image"]).size == (64, 64) for item in gallery)
        elif endpoint == "/diagnose":
            label, _, details = client.predict(example, "I am 60; it bleeds and grew.", api_name=endpoint)
            assert label["confidences"] and details["options"]
        else:
            label, _, checklist, _ = client.predict(example, 2, api_name=endpoint)
            assert len(label["confidences"]) == 2 and "Expert checklist" in checklist
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_unknown_space_is_refused(tmp_path):
    with pytest.raises(KeyError, match="Unknown Space"):
        build_space("dermatology", tmp_path)


def test_a_built_space_is_publishable_as_a_space(tmp_path):
    from magic.publish import check_publishable

    assert check_publishable(build_space("wbc", tmp_path)) == "space"
