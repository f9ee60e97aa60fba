"""The white-blood-cell demo: upload a cell image, get the top-k classes with calibrated probabilities."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/wbc.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr

from magic.classifiers import ImageClassifier, load_classifier
from spaces.common import (
    DELETE_CACHE,
    EXAMPLES_DIR,
    MAX_FILE_SIZE,
    UploadedImage,
    model_card_markdown,
    notice,
    read_image,
)

DEFAULT_MODEL = "magic-suite/wbc-classifier"


def create_demo(classifier: ImageClassifier | None = None, model_id: str = DEFAULT_MODEL) -> gr.Blocks:
    """The WBC tab. ``classifier`` overrides the model loaded from ``model_id`` (a folder, embedded id or Hub id)."""
    classifier = classifier or load_classifier(model_id)
    num_classes = len(classifier.label_names)

    def classify_wbc(image_path: str | None, top_k: float = 3) -> dict[str, float]:
        """Top-k white-blood-cell classes of one image with calibrated probabilities."""
        if not 1 <= int(top_k) <= num_classes:
            raise gr.Error(f"top_k must be between 1 and {num_classes}; got {top_k}.")
        image = read_image(image_path)
        return classifier.predict(image, top_k=int(top_k))[0].as_dict()

    examples = sorted(str(path) for path in (EXAMPLES_DIR / "wbc").glob("*.png"))
    with gr.Blocks(title="White blood cells", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("## White blood cell classifier\nUpload a single-cell image from a stained peripheral blood "
                    f"smear; the model ranks {num_classes} classes: {', '.join(classifier.label_names)}.")
        notice()
        with gr.Row():
            with gr.Column():
                image = UploadedImage(label="Cell image", height=320)
                top_k = gr.Slider(1, num_classes, value=3, step=1, label="Classes to show (top-k)")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                label = gr.Label(label="Predicted class (calibrated probability)", num_top_classes=num_classes)
        if examples:
            gr.Examples(examples, inputs=image, label="Example images drawn by the project (not patient data)")
        with gr.Accordion("Model card", open=False):
            gr.Markdown(model_card_markdown(model_id))
        button.click(classify_wbc, inputs=[image, top_k], outputs=label, api_name="classify_wbc")
    return demo


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)
