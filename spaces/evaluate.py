"""The Evaluator demo: an image and a condition in, the expert checklist with pass/fail per item, reasons, score out."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/evaluate.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from typing import Any

import gradio as gr

from magic.catalog import CatalogError, available_catalogs, load_catalog
from magic.evaluation import Checklist, EvaluationError, Evaluator, VerdictCache, load_evaluator
from spaces.common import (
    DELETE_CACHE,
    EXAMPLES_DIR,
    MAX_FILE_SIZE,
    UploadedImage,
    model_card_link,
    model_card_text,
    notice,
    read_image,
)

DEFAULT_MODEL = "magic-suite/checklist-evaluator"
DEFAULT_CATALOG = "pbc"
SKIN_TONES = {"not specified": None, "lighter (Fitzpatrick I-III)": "light", "darker (Fitzpatrick IV-VI)": "dark"}


def _condition_choices(catalog_name: str) -> list[tuple[str, str]]:
    catalog = load_catalog(catalog_name)
    return [(condition.display_name, condition.id) for condition in catalog.conditions]


def verdict_markdown(checklist: Checklist, scores: list[int], reasons: list[str], valid: bool) -> str:
    rows = "\n".join(f"| {index} | {'✅ pass' if score else '❌ fail'} | {item} | {reason} |"
                     for index, (item, score, reason) in enumerate(zip(checklist.items, scores, reasons), start=1))
    warning = "" if valid else ("> ⚠️ The evaluator does not recognise this as a valid image for its checklists: "
                                "every item is 0, as in the MAGIC paper.\n\n")
    return (f"{warning}### {checklist.condition_name}: {sum(scores)} / {len(scores)} criteria met\n\n"
            f"| # | verdict | checklist item ({checklist.version}) | reason |\n|---|---|---|---|\n{rows}")


def create_demo(evaluator: Evaluator | None = None, model_id: str = DEFAULT_MODEL) -> gr.Blocks:
    """The Evaluator tab. ``evaluator`` overrides the embedded one loaded from ``model_id``; event ``/evaluate``."""
    if evaluator is None:
        evaluator = load_evaluator(f"embedded:{model_id}", cache=VerdictCache(None))  # in memory: uploads not kept
    catalogs = available_catalogs()

    def conditions_for(catalog_name: str):
        try:
            choices = _condition_choices(catalog_name)
        except CatalogError as error:
            raise gr.Error(str(error)) from error
        return gr.Dropdown(choices=choices, value=choices[0][1])

    def evaluate(image_path: str | None, catalog_name: str = DEFAULT_CATALOG, condition: str = "",
                 skin_tone: str = "not specified"):
        if catalog_name not in catalogs:
            raise gr.Error(f"catalog must be one of {catalogs}; got {catalog_name!r}.")
        if skin_tone not in SKIN_TONES:
            raise gr.Error(f"skin_tone must be one of {list(SKIN_TONES)}; got {skin_tone!r}.")
        catalog = load_catalog(catalog_name)
        try:
            checklist = Checklist.from_catalog(catalog, condition or catalog.ids[0], skin_tone=SKIN_TONES[skin_tone])
        except KeyError as error:
            raise gr.Error(f"condition must be one of {catalog.ids}; got {condition!r}.") from error
        image = read_image(image_path)
        try:
            verdict = evaluator.evaluate(image, checklist)
        except EvaluationError as error:
            raise gr.Error(f"The evaluator failed: {error}") from error
        details: dict[str, Any] = {**verdict.to_dict(), "catalog": catalog.name}
        details.pop("raw_answer", None)
        score = f"{verdict.score} / {len(verdict.scores)} criteria met"
        return score, verdict_markdown(checklist, verdict.scores, verdict.rationales, verdict.valid_image), details

    examples = sorted(str(path) for path in (EXAMPLES_DIR / "wbc").glob("*.png"))[:4]
    with gr.Blocks(delete_cache=DELETE_CACHE, title="Checklist evaluator") as demo:
        gr.Markdown("## Checklist evaluator\nUpload an image (a real or a generated one), pick a condition, and the "
                    "evaluator checks the image against that condition's 5-item expert checklist, item by item, as "
                    "MAGIC's evaluator does (1 = the image meets the item). The embedded evaluator was trained on "
                    "PBC blood-cell and HAM10000 dermoscopy images; on other kinds of images or checklists its "
                    f"verdicts are unreliable.\n\n{model_card_link(model_id)}")
        notice()
        with gr.Row():
            with gr.Column():
                image = UploadedImage(label="Image", height=320)
                catalog = gr.Dropdown(catalogs, value=DEFAULT_CATALOG, label="Condition catalog")
                condition = gr.Dropdown(_condition_choices(DEFAULT_CATALOG), value=load_catalog(DEFAULT_CATALOG).ids[0],
                                        label="Condition", allow_custom_value=True)  # checked by the handler
                skin_tone = gr.Dropdown(list(SKIN_TONES), value="not specified",
                                        label="Skin tone (wording of a skin checklist's colour item)")
                button = gr.Button("Evaluate", variant="primary")
            with gr.Column():
                score = gr.Label(label="Score (criteria met)")
                details = gr.JSON(label="Verdict (JSON)")
        table = gr.Markdown()
        if examples:
            gr.Examples(examples, inputs=image, label="Example images made by the project (not patient data)")
        with gr.Accordion("Evaluator card", open=False):
            gr.Markdown(model_card_text(model_id))
        catalog.change(conditions_for, inputs=catalog, outputs=condition, api_name="evaluator_conditions")
        button.click(evaluate, inputs=[image, catalog, condition, skin_tone], outputs=[score, table, details],
                     api_name="evaluate")
    return demo


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)
