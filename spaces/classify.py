"""A classifier tab shared by the WBC and skin demos: top-k, saliency overlay, expert checklist, trust verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from magic.catalog import Catalog
from magic.classifiers import ImageClassifier
from magic.classifiers.explain import grad_cam, overlay
from spaces.common import (
    DELETE_CACHE,
    EXAMPLES_DIR,
    UploadedImage,
    model_card_link,
    model_card_text,
    notice,
    read_image,
)

SKIN_TONES = {"not specified": None, "lighter (Fitzpatrick I-III)": "light", "darker (Fitzpatrick IV-VI)": "dark"}


@dataclass
class ClassifierTab:
    """What differs between classifier tabs."""

    title: str
    intro: str
    api_name: str
    image_label: str
    examples_subdir: str
    model_id: str
    skin_tone_choice: bool = False
    min_confidence: float = 0.5


def checklist_markdown(catalog: Catalog, condition_id: str, skin_tone: str | None) -> str:
    condition = catalog.get(condition_id)
    items = "\n".join(f"{i}. {item}" for i, item in enumerate(catalog.checklist(condition_id, skin_tone), 1))
    return (f"### {condition.display_name}\n{condition.description}\n\n**Expert checklist** "
            f"({catalog.name} v{catalog.version}):\n\n{items}")


def create_classifier_demo(tab: ClassifierTab, classifier: ImageClassifier, catalog: Catalog) -> gr.Blocks:
    """One classifier tab; its event is exposed as ``/{tab.api_name}``."""
    num_classes = len(classifier.label_names)

    def classify(image_path: str | None, top_k: float = 3, skin_tone: str = "not specified"):
        if not 1 <= int(top_k) <= num_classes:
            raise gr.Error(f"top_k must be between 1 and {num_classes}; got {top_k}.")
        if skin_tone not in SKIN_TONES:
            raise gr.Error(f"skin_tone must be one of {list(SKIN_TONES)}; got {skin_tone!r}.")
        image = read_image(image_path)
        verdict = classifier.assess(image, top_k=int(top_k), min_confidence=tab.min_confidence)[0]
        top = verdict.prediction.labels[0]
        saliency = overlay(image, grad_cam(classifier, image, target=top))
        details: dict[str, Any] = {
            "status": verdict.status,
            "reason": verdict.reason,
            "top_k": [{"label": label, "probability": p} for label, p in
                      zip(verdict.prediction.labels, verdict.prediction.probabilities)],
            "checklist": catalog.checklist(top, SKIN_TONES[skin_tone]),
            "model": tab.model_id,
        }
        checklist = checklist_markdown(catalog, top, SKIN_TONES[skin_tone])
        if verdict.status != "ok":
            checklist = f"> ⚠️ **{verdict.status.replace('_', ' ')}**: {verdict.reason}\n\n{checklist}"
        return verdict.prediction.as_dict(), saliency, checklist, details

    examples = sorted(str(path) for path in (EXAMPLES_DIR / tab.examples_subdir).glob("*.png"))
    with gr.Blocks(delete_cache=DELETE_CACHE, title=tab.title) as demo:
        gr.Markdown(f"## {tab.title}\n{tab.intro}\n\n{model_card_link(tab.model_id)}")
        notice()
        with gr.Row():
            with gr.Column():
                image = UploadedImage(label=tab.image_label, height=320)
                top_k = gr.Slider(1, num_classes, value=3, step=1, label="Classes to show (top-k)")
                inputs = [image, top_k]
                if tab.skin_tone_choice:
                    inputs.append(gr.Dropdown(list(SKIN_TONES), value="not specified",
                                              label="Skin tone (wording of the checklist's colour item)"))
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                label = gr.Label(label="Prediction (calibrated probability)", num_top_classes=num_classes)
                saliency = gr.Image(label="Where the model looked (Grad-CAM)", interactive=False, height=256)
        checklist = gr.Markdown()
        with gr.Accordion("Details (JSON)", open=False):
            details = gr.JSON(label="status, top-k, checklist")
        if examples:
            gr.Examples(examples, inputs=image, label="Example images made by the project (not patient data)")
        with gr.Accordion("Model card", open=False):
            gr.Markdown(model_card_text(tab.model_id))
        button.click(classify, inputs=inputs, outputs=[label, saliency, checklist, details],
                     api_name=tab.api_name)
    return demo
