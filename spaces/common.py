"""Pieces every demo tab shares: the safety notice, safe image uploads, model-card links."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from magic.hub import HUB_ORG, resolve_model  # noqa: E402
from magic.images import ImageInputError, open_image  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

NOTICE = (
    "⚠️ **Research demo, not a medical device.** Its answers can be wrong and must not be used to diagnose, "
    "treat or triage anyone. Uploaded images are processed in memory; the server deletes its copy within three "
    "minutes."
)

#: Largest upload the server accepts; larger requests are refused before they reach a model.
MAX_FILE_SIZE = "25mb"
#: gradio's upload-cache sweep: every 60 s, delete the files (uploads and outputs) older than 120 s. Deleting an upload
#: right after reading it would race with a concurrent upload of the same bytes (gradio stores both at one path).
DELETE_CACHE = (60, 120)


class UploadedImage(gr.Image):
    """An image input that hands the handler the uploaded file's path without decoding it first.

    gradio's own Image component opens the file before the handler runs, so a non-image or a damaged file fails
    with an internal error; here the handler opens it with ``magic.images.open_image`` and answers clearly.
    """

    is_template = True  # the browser renders it with gradio's own Image component

    def __init__(self, **kwargs):
        kwargs.setdefault("sources", ["upload", "clipboard"])
        super().__init__(type="filepath", **kwargs)

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Image)  # serialise every Image setting, not just this __init__'s

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return super().preprocess(payload)
        return payload.path


class ItemNumbers(gr.CheckboxGroup):
    """Checkboxes whose values are checklist item numbers (1, 2, ...), documented to API callers as integers.

    gradio's CheckboxGroup documents every choice value as a string, so ``view_api`` showed ``'1'`` for an item that
    only the integer ``1`` selected. Here the API schema says integer, and a digit string such as ``"2"`` is
    accepted as the same item, so scripts written either way work.
    """

    is_template = True  # the browser renders it with gradio's own CheckboxGroup component

    def get_config(self, cls=None):
        return super().get_config(cls or gr.CheckboxGroup)

    def api_info(self) -> dict:
        info = super().api_info()
        info["items"] = {**info["items"], "type": "integer"}
        return info

    def preprocess(self, payload):
        numbers = {str(value): value for _, value in self.choices}
        return super().preprocess([numbers.get(value, value) if isinstance(value, str) else value
                                   for value in payload or []])


def read_image(path: str | None) -> Image.Image:
    """Open an uploaded image, turning every problem into a gr.Error the caller can read."""
    if path is None:
        raise gr.Error("Upload an image first (PNG, JPEG, WebP, BMP or TIFF).")
    try:
        return open_image(path)
    except ImageInputError as error:
        raise gr.Error(str(error)) from error


def model_card_link(model_id: str) -> str:
    """Markdown link to the model's Hub page."""
    repo_id = model_id if "/" in model_id else f"{HUB_ORG}/{model_id}"
    return f"Model: [{repo_id}](https://huggingface.co/{repo_id})"


def model_card_text(model_id: str) -> str:
    """The model card's body (without its YAML metadata) when the weights are local, else a pointer to the Hub."""
    try:
        card = resolve_model(model_id) / "README.md"
    except FileNotFoundError:
        card = None
    if card is None or not card.is_file():
        return f"No local card for {model_id}; see its Hub page."
    text = card.read_text()
    return text.split("---", 2)[2] if text.startswith("---") else text


def notice() -> gr.Markdown:
    return gr.Markdown(NOTICE, elem_classes=["magic-notice"])
