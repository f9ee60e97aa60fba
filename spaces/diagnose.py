"""The Diagnose demo: a skin image and the patient's own words in, options, narrative evidence and a ranked
diagnosis out (image model proposes, narrative model decides: Chain of Options, one pass at inference)."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/diagnose.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr

from magic.catalog import load_catalog
from magic.classifiers import load_classifier
from magic.narratives import load_narrative_classifier
from magic.narratives.fusion import MAX_NARRATIVE_CHARS, DiagnosisPipeline
from spaces.common import DELETE_CACHE, MAX_FILE_SIZE, UploadedImage, model_card_link, notice, read_image

IMAGE_MODEL = "magic-suite/skin-classifier"
NARRATIVE_MODEL = "magic-suite/narrative-classifier"
EXAMPLE_NARRATIVE = ("I'm 72 and I have a spot on my nose. It has grown over the last months and it bleeds when I "
                     "wash my face. It doesn't itch. It's raised.")
_FACT_NAMES = {"age": "Age", "sex": "Sex", "region": "Body region", "fitzpatrick": "Skin type (Fitzpatrick)",
               "diameter_mm": "Size", "itch": "Itch", "grew": "Growth", "hurt": "Pain", "changed": "Change",
               "bleed": "Bleeding", "elevation": "Elevation"}


def diagnosis_markdown(diagnosis, names: dict[str, str], had_image: bool) -> str:
    source = "the image model's top classes" if had_image else "all six (no usable image)"
    options = ", ".join(names[o] for o in diagnosis.options)
    facts = "\n".join(f"- **{_FACT_NAMES[key]}**: {value}" for key, value in diagnosis.evidence.items()) or \
        "- no facts recognised in the text"
    ranked = "\n".join(f"{i}. {names[c]} ({c}): {p:.1%}" for i, (c, p) in enumerate(diagnosis.probabilities.items(), 1))
    notes = "".join(f"\n> ℹ️ {note}\n" for note in diagnosis.notes)
    return (f"**Options** (from {source}): {options}\n\n**Narrative evidence understood**\n{facts}\n{notes}\n"
            f"**Ranked diagnosis**\n\n{ranked}")


def create_demo(pipeline: DiagnosisPipeline | None = None, image_model_id: str = IMAGE_MODEL,
                narrative_model_id: str = NARRATIVE_MODEL) -> gr.Blocks:
    """The Diagnose tab; ``pipeline`` overrides the models loaded from the two ids. Event: ``/diagnose``."""
    if pipeline is None:
        pipeline = DiagnosisPipeline(load_classifier(image_model_id), load_narrative_classifier(narrative_model_id))
    catalog = load_catalog("pad-ufes-20")
    names = {condition.id: condition.display_name for condition in catalog.conditions}

    def diagnose(image_path: str | None, narrative: str | None = ""):
        image = read_image(image_path) if image_path is not None else None
        if not isinstance(narrative, str):
            narrative = ""
        diagnosis = pipeline(image, narrative)
        label = {names[c]: p for c, p in diagnosis.probabilities.items()}
        details = {
            "options": diagnosis.options,
            "evidence": diagnosis.evidence,
            "notes": diagnosis.notes,
            "probabilities": diagnosis.probabilities,
            "narrative_probabilities": diagnosis.narrative_probabilities,
            "image_probabilities": diagnosis.image_probabilities,
            "image_weight": pipeline.weight,
            "models": {"image": image_model_id, "narrative": narrative_model_id},
        }
        details["image_status"] = diagnosis.image_status
        return label, diagnosis_markdown(diagnosis, names, bool(diagnosis.image_probabilities)), details

    with gr.Blocks(delete_cache=DELETE_CACHE, title="Image + narrative diagnosis") as demo:
        gr.Markdown(
            "## Image + narrative diagnosis\nUpload a dermatoscopic image of one lesion and describe it in your own "
            "words (age, where it is, whether it itches, grew, hurts, changed, bleeds, is raised). The image model "
            "proposes the options; a language model fine-tuned with *Chain of Options* reads the text and decides "
            "among them; both are combined. Diagnoses named or demanded in the text are ignored: only symptoms "
            f"count. Text beyond {MAX_NARRATIVE_CHARS:,} characters is not read.\n\n"
            f"{model_card_link(image_model_id)} · {model_card_link(narrative_model_id)}")
        notice()
        with gr.Row():
            with gr.Column():
                image = UploadedImage(label="Dermatoscopic image (optional)", height=280)
                narrative = gr.Textbox(label="The patient's description", lines=5, placeholder=EXAMPLE_NARRATIVE)
                button = gr.Button("Diagnose", variant="primary")
            with gr.Column():
                label = gr.Label(label="Final ranked diagnosis (probability)", num_top_classes=6)
                summary = gr.Markdown()
        with gr.Accordion("Details (JSON)", open=False):
            details = gr.JSON(label="options, evidence, image / narrative / final probabilities")
        gr.Examples([[None, EXAMPLE_NARRATIVE]], inputs=[image, narrative], label="Example description (invented)")
        button.click(diagnose, inputs=[image, narrative], outputs=[label, summary, details], api_name="diagnose")
    return demo


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)
