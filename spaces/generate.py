"""The Generate demo: synthetic images of a condition, from text or translated from an uploaded image."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/generate.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import functools
import math
from collections.abc import Sequence

import gradio as gr
import pandas as pd

from magic.catalog import load_catalog
from magic.evaluation import Evaluator, load_evaluator
from magic.feedback import FeedbackLoopConfig, FeedbackTrainConfig, run_feedback_loop
from magic.generation import GenerationSettings, Generator
from magic.generation.adapters import load_lora
from magic.generation.class_loras import find_class_loras, with_class_lora
from spaces.common import DELETE_CACHE, MAX_FILE_SIZE, UploadedImage, model_card_link, notice, read_image

DEFAULT_MODEL = "magic-suite/wbc-generator"
DEFAULT_TEMPLATE = "a microscopy image of a {name} white blood cell"
MODES = ["text-to-image", "image-to-image"]
MAX_IMAGES = 8
MAX_STEPS = 100
MAX_ROUNDS = 3
FEEDBACK_METHODS = ("dpo", "rft")
FEEDBACK_TRAIN_STEPS = 20  # LoRA steps per round in the tab (the CLI trains longer)
DEFAULT_REWARD_CLASSIFIER = "magic-suite/wbc-classifier"
DEFAULT_FEEDBACK_LORA = "magic-suite/wbc-generator-feedback-lora"  # the loop's LoRA for the embedded generator
DEFAULT_CLASS_LORAS = "magic-suite/wbc-generator-class-loras"  # its per-class LoRAs (CytoDiff): basophil
FEEDBACK_SOURCES = ("checklist evaluator", "classifier")  # what judges the images the loop trains on


def create_demo(generator: Generator | None = None, model_id: str = DEFAULT_MODEL, catalog: str = "pbc",
                prompt_template: str | None = None, evaluator: Evaluator | None = None,
                reward_classifier: str = DEFAULT_REWARD_CLASSIFIER, feedback_lora: str | None = "auto",
                class_loras: str | None = "auto") -> gr.Blocks:
    """The Generate tab for a pipeline whose prompts name the conditions of ``catalog``.

    The prompt form and the conditions offered come from the pipeline's ``magic_generator.json`` when it has one
    (``prompt_template`` overrides the form). The feedback loop is judged by ``evaluator`` (default: the embedded
    checklist evaluator) or, when the user picks "classifier", by ``reward_classifier`` (a classifier folder or id
    whose classes include the conditions) as a ``classifier:`` evaluator. ``feedback_lora`` (a LoRA folder or id
    for this generator; ``"auto"``: the embedded one when the generator is the embedded default, else none) is
    offered as the feedback-tuned generator, on by default. ``class_loras`` (a folder or id of per-class LoRAs, as
    train-class-loras writes them; ``"auto"`` as for ``feedback_lora``) draws a condition that has its own LoRA
    with it instead, also on by default.
    """
    generator = generator or Generator.from_pretrained(model_id)
    if feedback_lora == "auto":
        feedback_lora = DEFAULT_FEEDBACK_LORA if model_id == DEFAULT_MODEL else None
    tuned = None
    if feedback_lora:
        tuned = generator.clone()  # its own UNet with the LoRA; the loop below starts from the untuned one
        load_lora(tuned.pipeline, feedback_lora)
    if class_loras == "auto":
        class_loras = DEFAULT_CLASS_LORAS if model_id == DEFAULT_MODEL else None
    conditions = load_catalog(catalog)
    info = generator.info
    prompt_template = prompt_template or (info.prompt_template if info else DEFAULT_TEMPLATE)
    trained = set(info.label_names) if info and info.label_names else set(conditions.ids)
    choices = [(condition.display_name, condition.id) for condition in conditions.conditions if condition.id in trained]
    if not choices:
        raise ValueError(f"The generator knows {sorted(trained)}, none of which is in the {catalog!r} catalog.")
    offered = [value for _, value in choices]
    own = {name: with_class_lora(generator, folder)  # a private UNet per class, with only that class's LoRA
           for name, folder in (find_class_loras(class_loras, offered) if class_loras else {}).items()}

    @functools.cache
    def feedback_evaluator(source: str) -> Evaluator:  # loaded on the first loop, not at start-up
        if source == "classifier":
            return load_evaluator(f"classifier:{reward_classifier}")
        return evaluator or load_evaluator("embedded")

    def check_inputs(condition: str, options: dict[str, tuple[str, Sequence[str]]],
                     numbers: dict[str, float]) -> None:
        """Refuse an unknown condition or option (``options``: name -> (value, allowed values)), and NaN /
        infinite / non-number settings (NaN passes gradio's range checks: every comparison with NaN is false)."""
        if condition not in offered:
            raise gr.Error(f"condition must be one of {offered}; got {condition!r}.")
        for name, (value, allowed) in options.items():
            if value not in allowed:
                raise gr.Error(f"{name} must be one of {list(allowed)}; got {value!r}.")
        bad = [name for name, value in numbers.items()
               if not isinstance(value, int | float) or not math.isfinite(value)]
        if bad:
            raise gr.Error(f"{', '.join(bad)} must be finite numbers.")

    def generate(condition: str, mode: str, image_path: str | None, seed: float, strength: float, guidance: float,
                 steps: float, count: float, feedback_tuned: bool = False, class_lora: bool = False,
                 progress=gr.Progress()):  # noqa: B008 (gradio injects it)
        """Synthetic images of ``condition`` (with its own LoRA when asked and it has one, else from the
        feedback-tuned generator when asked); image-to-image translates the uploaded image toward it."""
        check_inputs(condition, {"mode": (mode, MODES)},
                     {"seed": seed, "strength": strength, "guidance": guidance, "steps": steps, "count": count})
        if feedback_tuned and tuned is None:
            raise gr.Error("This demo has no feedback-tuned LoRA for its generator; set feedback_tuned to false.")
        if class_lora and not own:
            raise gr.Error("This demo has no per-class LoRAs for its generator; set class_lora to false.")
        model = own[condition] if class_lora and condition in own else tuned if feedback_tuned else generator
        try:
            settings = GenerationSettings(steps=int(steps), guidance=float(guidance), strength=float(strength),
                                          seed=int(seed))
        except ValueError as error:
            raise gr.Error(str(error)) from error
        prompt = prompt_template.format(name=condition.replace("_", " "))
        source = read_image(image_path) if mode == "image-to-image" else None
        images = []
        for index in progress.tqdm(range(int(count)), desc="generating"):
            one = GenerationSettings(settings.steps, settings.guidance, settings.strength, settings.seed + index)
            images += (model.image_to_image(source, prompt, one) if source is not None
                       else model.text_to_image(prompt, one))
        tag = f" · {condition} LoRA" if model is own.get(condition) else " · feedback-tuned" if model is tuned else ""
        return [(image, f"{condition}{tag} · seed {settings.seed + i}") for i, image in enumerate(images)]

    def generate_with_feedback(condition: str, seed: float, guidance: float, steps: float, rounds: float,
                               per_round: float, method: str, feedback_from: str = FEEDBACK_SOURCES[0],
                               progress=gr.Progress()):  # noqa: B008
        """MAGIC's loop on a private copy of the generator: each round draws images, judges them (against the
        checklist, or by a classifier's confidence in the condition), pairs them and fine-tunes a LoRA (DPO or
        RFT); returns the last round's images with their verdicts, the score per round and the reports."""
        check_inputs(condition,
                     {"method": (method, FEEDBACK_METHODS), "feedback_from": (feedback_from, FEEDBACK_SOURCES)},
                     {"seed": seed, "guidance": guidance, "steps": steps, "rounds": rounds, "per_round": per_round})
        if not 1 <= rounds <= MAX_ROUNDS or not 2 <= per_round <= MAX_IMAGES or int(per_round) % 2:
            raise gr.Error(f"rounds must be 1-{MAX_ROUNDS} and images per round an even number 2-{MAX_IMAGES}.")
        if generator.info is None:
            raise gr.Error("This generator has no magic_generator.json, so the loop cannot prompt its classes.")
        try:
            config = FeedbackLoopConfig(
                catalog=catalog, conditions=[condition], rounds=int(rounds), samples_per_condition=int(per_round),
                eval_per_condition=int(per_round), steps=int(steps), guidance=float(guidance), seed=int(seed),
                train=FeedbackTrainConfig(method=method, steps=FEEDBACK_TRAIN_STEPS, batch_size=8))
            GenerationSettings(steps=int(steps), guidance=float(guidance), seed=int(seed))
        except ValueError as error:
            raise gr.Error(str(error)) from error
        progress(0, desc="round 0: measuring the generator as it is")

        def report_round(report) -> None:
            progress(report.round / config.rounds, desc=f"round {report.round}: mean score "
                                                        f"{report.evaluator_mean_score:.2f}")

        judge = feedback_evaluator(feedback_from)
        known = getattr(judge, "label_names", None)  # a classifier evaluator's classes
        if known is not None and condition not in known:
            raise gr.Error(f"The reward classifier knows {list(known)}, not {condition!r}; use the checklist "
                           "evaluator for it.")
        result = run_feedback_loop(generator.clone(), judge, config, on_round=report_round)
        gallery = [(image, f"{condition} · seed {int(seed) + i} · {verdict.score}/{len(verdict.scores)} criteria")
                   for i, (image, verdict) in enumerate(zip(result.images, result.verdicts))]
        rows = [{"round": r.round, "value": value, "measure": measure} for r in result.rounds
                for measure, value in ((f"mean {'classifier' if known is not None else 'checklist'} score (0-5)",
                                        r.evaluator_mean_score),
                                       ("share meeting >= 3 criteria x 5", 5 * r.evaluator_share_at_least_3))]
        return gallery, pd.DataFrame(rows), {"evaluator": judge.backend_id, **result.to_dict(),
                                             "verdicts": [v.to_dict() for v in result.verdicts]}

    with gr.Blocks(delete_cache=DELETE_CACHE, title="Generate") as demo:
        gr.Markdown(f"## Generate synthetic images\nText-to-image, or image-to-image (MAGIC: a real image translated "
                    f"toward another condition at low strength).\n\n{model_card_link(model_id)}")
        notice()
        with gr.Row():
            with gr.Column():
                condition = gr.Dropdown(choices, value=choices[0][1], label="Condition")
                mode = gr.Radio(MODES, value=MODES[0], label="Mode")
                image = UploadedImage(label="Source image (image-to-image)", height=200)
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed")
                    count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images")
                strength = gr.Slider(0.05, 1.0, value=0.3, step=0.05, label="Strength (image-to-image)")
                guidance = gr.Slider(0.0, 15.0, value=5.0, step=0.5, label="Guidance")
                steps = gr.Slider(1, MAX_STEPS, value=30, step=1, label="Steps")
                feedback_tuned = gr.Checkbox(tuned is not None, visible=tuned is not None,
                                             label="Feedback-tuned generator (DPO LoRA)",
                                             info=f"With the LoRA MAGIC's feedback loop trained ({feedback_lora}); "
                                                  "untick for the generator as it was trained.")
                class_lora = gr.Checkbox(bool(own), visible=bool(own), label="Own LoRA for "
                                         f"{', '.join(sorted(own)) or 'no condition'} (CytoDiff)",
                                         info=f"Draw a condition that has its own LoRA ({class_loras}: learnt from "
                                              "the real training images of that class) with it, instead of the "
                                              "generator above.")
                button = gr.Button("Generate", variant="primary")
            with gr.Column():
                gallery = gr.Gallery(label="Synthetic images (not patient data)", columns=4, height=420,
                                     format="png")  # lossless: what the model drew, pixel for pixel
        with gr.Accordion("Evaluator feedback loop (MAGIC)", open=False):
            gr.Markdown("Each round draws images of the condition, judges them against its expert checklist, pairs "
                        "them with MAGIC's rules and fine-tunes a LoRA on a private copy of the generator (DPO on "
                        "the pairs, or reward-weighted RFT). Every round is measured on the same seeds. The score "
                        "comes from the evaluator being optimised; see the README for held-out measurements. "
                        "*Feedback from: classifier* judges by a blood-cell classifier's confidence that the image "
                        "shows the condition (five levels, p >= 0.2 ... 0.95) instead of the checklist, for "
                        "conditions the checklist evaluator gives no signal on.")
            with gr.Row():
                rounds = gr.Slider(1, MAX_ROUNDS, value=2, step=1, label="Rounds")
                per_round = gr.Slider(2, MAX_IMAGES, value=8, step=2, label="Images per round")
                method = gr.Radio(list(FEEDBACK_METHODS), value="dpo", label="Fine-tuning")
                feedback_from = gr.Radio(list(FEEDBACK_SOURCES), value=FEEDBACK_SOURCES[0], label="Feedback from")
            feedback_button = gr.Button("Generate with feedback")
            with gr.Row():
                feedback_gallery = gr.Gallery(label="Last round, with checklist scores", columns=4, height=300,
                                              format="png")
                plot = gr.LinePlot(x="round", y="value", color="measure", label="Evaluator score per round",
                                   height=300)
            reports = gr.JSON(label="Per-round reports and verdicts")
        button.click(generate, inputs=[condition, mode, image, seed, strength, guidance, steps, count, feedback_tuned,
                                       class_lora], outputs=gallery, api_name="generate")
        feedback_button.click(generate_with_feedback,
                              inputs=[condition, seed, guidance, steps, rounds, per_round, method, feedback_from],
                              outputs=[feedback_gallery, plot, reports], api_name="generate_with_feedback")
    return demo


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=1).launch(max_file_size=MAX_FILE_SIZE)
