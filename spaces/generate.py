"""The Generate demo: synthetic images of a condition, from text or translated from an uploaded image."""

from __future__ import annotations

if __package__ in (None, ""):  # run as `python spaces/generate.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import math

import gradio as gr

from magic.catalog import load_catalog
from magic.generation import GenerationSettings, Generator
from spaces.common import DELETE_CACHE, MAX_FILE_SIZE, UploadedImage, model_card_link, notice, read_image

DEFAULT_MODEL = "magic-suite/wbc-generator"
MODES = ["text-to-image", "image-to-image"]
MAX_IMAGES = 8
MAX_STEPS = 100


def create_demo(generator: Generator | None = None, model_id: str = DEFAULT_MODEL, catalog: str = "pbc",
                prompt_template: str = "a microscopy image of a {name} white blood cell") -> gr.Blocks:
    """The Generate tab for a pipeline whose prompts name the conditions of ``catalog``."""
    generator = generator or Generator.from_pretrained(model_id)
    conditions = load_catalog(catalog)
    choices = [(condition.display_name, condition.id) for condition in conditions.conditions]

    def generate(condition: str, mode: str, image_path: str | None, seed: float, strength: float, guidance: float,
                 steps: float, count: float, progress=gr.Progress()):  # noqa: B008 (gradio injects it)
        """Synthetic images of ``condition``; image-to-image translates the uploaded image toward it."""
        if condition not in conditions.ids:
            raise gr.Error(f"condition must be one of {conditions.ids}; got {condition!r}.")
        if mode not in MODES:
            raise gr.Error(f"mode must be one of {MODES}; got {mode!r}.")
        numbers = {"seed": seed, "strength": strength, "guidance": guidance, "steps": steps, "count": count}
        bad = [name for name, value in numbers.items()
               if not isinstance(value, int | float) or not math.isfinite(value)]
        if bad:  # NaN passes gradio's range checks (every comparison with NaN is false)
            raise gr.Error(f"{', '.join(bad)} must be finite numbers.")
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
            images += (generator.image_to_image(source, prompt, one) if source is not None
                       else generator.text_to_image(prompt, one))
        return [(image, f"{condition} · seed {settings.seed + i}") for i, image in enumerate(images)]

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
                button = gr.Button("Generate", variant="primary")
            with gr.Column():
                gallery = gr.Gallery(label="Synthetic images (not patient data)", columns=4, height=420)
        button.click(generate, inputs=[condition, mode, image, seed, strength, guidance, steps, count],
                     outputs=gallery, api_name="generate")
    return demo


if __name__ == "__main__":
    create_demo().queue(default_concurrency_limit=1).launch(max_file_size=MAX_FILE_SIZE)
