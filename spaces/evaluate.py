"""The Evaluator demo: an image and a condition in, the expert checklist with pass/fail per item, reasons, score out."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/evaluate.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from magic.catalog import CatalogError, available_catalogs, load_catalog
from magic.evaluation import Checklist, EvaluationError, Evaluator, VerdictCache, load_evaluator
from magic.evaluation.cache import image_digest
from magic.evaluation.experts import agreement_from_pairs, format_agreement
from spaces.common import (
    DELETE_CACHE,
    EXAMPLES_DIR,
    MAX_FILE_SIZE,
    ItemNumbers,
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


def _item_choices(checklist: Checklist) -> list[tuple[str, int]]:
    """Checkbox choices shown as the item text, sent as item numbers 1-5 (the same for every condition)."""
    return [(f"{number}. {item}", number) for number, item in enumerate(checklist.items, start=1)]


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

    def checklist_for(catalog_name: str, condition: str, skin_tone: str) -> Checklist:
        if catalog_name not in catalogs:
            raise gr.Error(f"catalog must be one of {catalogs}; got {catalog_name!r}.")
        if skin_tone not in SKIN_TONES:
            raise gr.Error(f"skin_tone must be one of {list(SKIN_TONES)}; got {skin_tone!r}.")
        catalog = load_catalog(catalog_name)
        try:
            return Checklist.from_catalog(catalog, condition or catalog.ids[0], skin_tone=SKIN_TONES[skin_tone])
        except KeyError as error:
            raise gr.Error(f"condition must be one of {catalog.ids}; got {condition!r}.") from error

    def checklist_items(catalog_name: str = DEFAULT_CATALOG, condition: str = "", skin_tone: str = "not specified"):
        """The checklist items an expert ticks, for the chosen condition (none ticked)."""
        return ItemNumbers(choices=_item_choices(checklist_for(catalog_name, condition, skin_tone)), value=[])

    def add_expert_label(image_path: str | None, catalog_name: str, condition: str, skin_tone: str,
                         ticked: list[int] | None, rater: str, labels: list[dict] | None):
        """Record an expert's 0/1 per item beside the evaluator's verdict; report Cohen's kappa so far."""
        checklist = checklist_for(catalog_name, condition, skin_tone)
        ticked = list(ticked or [])
        if any(not isinstance(number, int) or not 1 <= number <= len(checklist.items) for number in ticked):
            raise gr.Error(f"Ticked items are item numbers from 1 to {len(checklist.items)}; got {ticked}.")
        name = Path(image_path).name if image_path else ""
        image = read_image(image_path)
        try:
            verdict = evaluator.evaluate(image, checklist)
        except EvaluationError as error:
            raise gr.Error(f"The evaluator failed: {error}") from error
        labels = [*(labels or []), {
            "image": name, "image_sha256": image_digest(image), "catalog": catalog_name,
            "condition": checklist.condition_id,
            "scores": [int(number in ticked) for number in range(1, len(checklist.items) + 1)],
            "rater": str(rater or "")[:100], "checklist_version": checklist.version,
            "evaluator": list(verdict.scores), "evaluator_backend": verdict.backend + "@" + verdict.backend_version,
        }]
        result = agreement_from_pairs([{"expert": label["scores"], "evaluator": label["evaluator"]}
                                       for label in labels], evaluator.backend_id)
        download = Path(tempfile.mkdtemp(prefix="magic-expert-")) / "expert_labels.jsonl"
        download.write_text("".join(json.dumps(label) + "\n" for label in labels))
        return labels, format_agreement(result), str(download)

    def evaluate(image_path: str | None, catalog_name: str = DEFAULT_CATALOG, condition: str = "",
                 skin_tone: str = "not specified"):
        checklist = checklist_for(catalog_name, condition, skin_tone)
        catalog = load_catalog(catalog_name)
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
        with gr.Accordion("Expert review: label the checklist yourself and measure agreement", open=False):
            gr.Markdown("For clinicians: with an image and a condition chosen above, tick the items the image meets "
                        "and add your label. The evaluator judges the same image; Cohen's kappa per item between "
                        "you and the evaluator is updated with every label (this session only; download the labels "
                        "as `magic-expert-labels` JSON Lines for `python -m magic expert-agreement`).")
            labels = gr.State([])
            with gr.Row():
                with gr.Column():
                    expert_items = ItemNumbers(_item_choices(checklist_for(DEFAULT_CATALOG, "", "not specified")),
                                                    label="Items the image meets (your judgement)")
                    rater = gr.Textbox(label="Rater (optional)", max_lines=1)
                    add = gr.Button("Add my label")
                with gr.Column():
                    agreement = gr.Markdown()
                    labels_file = gr.File(label="Your labels (JSON Lines)")
        with gr.Accordion("Evaluator card", open=False):
            gr.Markdown(model_card_text(model_id))
        catalog.change(conditions_for, inputs=catalog, outputs=condition, api_name="evaluator_conditions")
        for control in (condition, skin_tone):
            control.change(checklist_items, inputs=[catalog, condition, skin_tone], outputs=expert_items,
                           api_name=False)
        add.click(add_expert_label, inputs=[image, catalog, condition, skin_tone, expert_items, rater, labels],
                  outputs=[labels, agreement, labels_file], api_name="expert_label")
        button.click(evaluate, inputs=[image, catalog, condition, skin_tone], outputs=[score, table, details],
                     api_name="evaluate")
    return demo


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=2).launch(max_file_size=MAX_FILE_SIZE)
