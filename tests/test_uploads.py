"""Uploads are not kept: gradio's cache sweep (spaces.common.DELETE_CACHE) deletes them from the server."""

import hashlib
import time

import gradio as gr
from gradio_client import Client, handle_file

from spaces import wbc
from spaces.common import DELETE_CACHE
from tests.conftest import free_port
from tests.test_app import _cell_image


def test_every_demo_and_the_app_sweep_uploads_within_three_minutes():
    from app import create_app

    assert DELETE_CACHE[0] + DELETE_CACHE[1] <= 180
    assert create_app().delete_cache == DELETE_CACHE
    assert wbc.create_demo().delete_cache == DELETE_CACHE  # a demo published alone as its own Space


def test_an_uploaded_image_is_deleted_by_the_sweep(tmp_path, monkeypatch):
    upload_dir = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_dir))
    with gr.Blocks(delete_cache=(1, 10)) as app:  # the same mechanism on a faster clock: sweep each 1 s, age 10 s
        wbc.create_demo()
    _, url, _ = app.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                   quiet=True)
    try:
        image = _cell_image(tmp_path / "patient.png")
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        label, *_ = Client(url, verbose=False).predict(handle_file(str(image)), 1, api_name="/classify_wbc")
        assert label["label"]

        def kept() -> list:
            return [p for p in upload_dir.rglob("*") if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest()
                    == digest]

        assert kept(), "the upload should be in the server's cache right after the request"
        deadline = time.time() + 30
        while kept() and time.time() < deadline:
            time.sleep(0.5)
        assert not kept(), "the uploaded image is still on the server"
    finally:
        app.close()
