"""The skin-lesion demo: a dermatoscopic image in, the top-k conditions, saliency and expert checklist out."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/skin.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr

from magic.catalog import load_catalog
from magic.classifiers import ImageClassifier, load_classifier
from spaces.classify import ClassifierTab, create_classifier_demo
from spaces.common import MAX_FILE_SIZE

DEFAULT_MODEL = "magic-suite/skin-classifier"


def create_demo(classifier: ImageClassifier | None = None, model_id: str = DEFAULT_MODEL) -> gr.Blocks:
    """The skin tab. ``classifier`` overrides the model loaded from ``model_id`` (a folder, embedded id or Hub id)."""
    classifier = classifier or load_classifier(model_id)
    catalog = load_catalog("ham10000")
    names = ", ".join(catalog.get(label).display_name for label in classifier.label_names)
    tab = ClassifierTab(
        title="Skin lesion classifier",
        intro="Upload a dermatoscopic (close-up, polarised-light) image of one skin lesion; the model ranks "
              f"{len(classifier.label_names)} conditions ({names}), shows where it looked and the expert checklist "
              "of its top answer. Images far from its training data are answered as *out of distribution*.",
        api_name="classify_skin",
        image_label="Dermatoscopic image",
        examples_subdir="skin",
        model_id=model_id,
        skin_tone_choice=True,
    )
    return create_classifier_demo(tab, classifier, catalog)


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)
