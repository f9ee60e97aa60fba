"""The white-blood-cell demo: upload a cell image, get the top-k classes, saliency and the class's checklist."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/wbc.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr

from magic.catalog import load_catalog
from magic.classifiers import ImageClassifier, load_classifier
from spaces.classify import ClassifierTab, create_classifier_demo
from spaces.common import MAX_FILE_SIZE

DEFAULT_MODEL = "magic-suite/wbc-classifier"


def create_demo(classifier: ImageClassifier | None = None, model_id: str = DEFAULT_MODEL) -> gr.Blocks:
    """The WBC tab. ``classifier`` overrides the model loaded from ``model_id`` (a folder, embedded id or Hub id)."""
    classifier = classifier or load_classifier(model_id)
    tab = ClassifierTab(
        title="White blood cell classifier",
        intro="Upload a single-cell image from a stained peripheral blood smear; the model ranks "
              f"{len(classifier.label_names)} classes: {', '.join(classifier.label_names)}.",
        api_name="classify_wbc",
        image_label="Cell image",
        examples_subdir="wbc",
        model_id=model_id,
    )
    return create_classifier_demo(tab, classifier, load_catalog("pbc"))


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)
