"""Build a Hugging Face Space folder for each demo, and one for the whole suite.

    python -m spaces.build                 # every Space into build/spaces/
    python -m spaces.build wbc --out DIR   # one Space

Each folder is self-contained: README.md with the Space's front matter (sdk gradio, sdk_version, app_file, models,
datasets, license, short_description), app.py, requirements.txt, the `magic` library, the demo's modules and
examples, and the embedded weights it needs (so it runs offline; on the Hub the same ids resolve to Hub repos).
Publish one with `python -m magic publish build/spaces/NAME --repo-id ORG/NAME --repo-type space`.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import gradio
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOT_A_DEVICE = "Research demo, not a medical device."


@dataclass(frozen=True)
class SpaceSpec:
    """What one Space holds and says about itself."""

    title: str
    emoji: str
    short_description: str
    modules: tuple[str, ...]  # spaces/*.py modules the app needs
    examples: tuple[str, ...]  # spaces/examples/ subfolders
    models: tuple[str, ...]  # embedded model ids, copied from weights/
    datasets: tuple[str, ...]
    license: str
    launcher: str  # the Python expression that builds the gr.Blocks
    extra_files: tuple[str, ...] = field(default=())


SPACES: dict[str, SpaceSpec] = {
    "wbc": SpaceSpec(
        title="MAGIC suite: white blood cells", emoji="🩸",
        short_description="White blood cell classifier with saliency and checklist",
        modules=("common", "classify", "wbc"), examples=("wbc",), models=("magic-suite/wbc-classifier",),
        datasets=("magic-suite/pbc",), license="cc-by-4.0", launcher="wbc.create_demo()"),
    "skin": SpaceSpec(
        title="MAGIC suite: skin lesions", emoji="🔬",
        short_description="Skin lesion classifier with saliency and checklist",
        modules=("common", "classify", "skin"), examples=("skin",), models=("magic-suite/skin-classifier",),
        datasets=("magic-suite/ham10000",), license="cc-by-nc-4.0", launcher="skin.create_demo()"),
    "evaluate": SpaceSpec(
        title="MAGIC suite: checklist evaluator", emoji="✅",
        short_description="Judge an image against a condition's expert checklist",
        modules=("common", "evaluate"), examples=("wbc", "skin"), models=("magic-suite/checklist-evaluator",),
        datasets=("magic-suite/pbc", "magic-suite/ham10000"), license="cc-by-nc-4.0",
        launcher="evaluate.create_demo()"),
    "diagnose": SpaceSpec(
        title="MAGIC suite: image + narrative diagnosis", emoji="🗣️",
        short_description="Skin image plus the patient's own words, Chain of Options",
        modules=("common", "diagnose"), examples=("skin",),
        models=("magic-suite/skin-classifier", "magic-suite/narrative-classifier"),
        datasets=("magic-suite/ham10000", "magic-suite/pad-ufes-20-narratives"), license="cc-by-nc-4.0",
        launcher="diagnose.create_demo()"),
    "generate": SpaceSpec(
        title="MAGIC suite: synthetic blood cells", emoji="🧫",
        short_description="Text-to-image and image-to-image white blood cells",
        modules=("common", "generate"), examples=("wbc",),
        models=("magic-suite/wbc-generator", "magic-suite/wbc-generator-feedback-lora",
                "magic-suite/wbc-generator-class-loras", "magic-suite/checklist-evaluator",
                "magic-suite/wbc-classifier"),  # the last: the loop's reward
        datasets=("magic-suite/pbc", "magic-suite/ham10000"), license="cc-by-nc-4.0",
        launcher="generate.create_demo()"),
    "suite": SpaceSpec(
        title="MAGIC suite", emoji="🧪",
        short_description="Medically accurate synthetic images and their models",
        modules=("common", "classify", "wbc", "skin", "evaluate", "diagnose", "generate"), examples=("wbc", "skin"),
        models=("magic-suite/wbc-classifier", "magic-suite/skin-classifier", "magic-suite/checklist-evaluator",
                "magic-suite/narrative-classifier", "magic-suite/wbc-generator",
                "magic-suite/wbc-generator-feedback-lora", "magic-suite/wbc-generator-class-loras"),
        datasets=("magic-suite/pbc", "magic-suite/ham10000"), license="cc-by-nc-4.0", launcher="create_app()",
        extra_files=("app.py",)),
}

LAUNCHER = '''"""{title}: Hugging Face Space entry point (built by `python -m spaces.build`)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

{imports}
from spaces.common import MAX_FILE_SIZE

demo = {launcher}

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), max_file_size=MAX_FILE_SIZE, show_error=True
    )
'''


def front_matter(spec: SpaceSpec) -> dict:
    return {
        "title": spec.title,
        "emoji": spec.emoji,
        "colorFrom": "indigo",
        "colorTo": "pink",
        "sdk": "gradio",
        "sdk_version": gradio.__version__,
        "app_file": "app.py",
        "pinned": False,
        "license": spec.license,
        "short_description": spec.short_description,
        "models": list(spec.models),
        "datasets": list(spec.datasets),
        "tags": ["medical-imaging", "magic-suite", "research-only"],
    }


def build_space(name: str, out: Path) -> Path:
    """Write the Space ``name`` into ``out/name`` (replacing it) and return that folder."""
    if name not in SPACES:
        raise KeyError(f"Unknown Space {name!r}; known: {sorted(SPACES)}.")
    spec = SPACES[name]
    folder = out / name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "spaces" / "examples").mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi")
    shutil.copytree(ROOT / "magic", folder / "magic", ignore=ignore)
    (folder / "spaces" / "__init__.py").write_text("")
    for module in spec.modules:
        shutil.copy(ROOT / "spaces" / f"{module}.py", folder / "spaces" / f"{module}.py")
    for subdir in spec.examples:
        shutil.copytree(ROOT / "spaces" / "examples" / subdir, folder / "spaces" / "examples" / subdir)
    for model_id in spec.models:
        source = ROOT / "weights" / model_id.split("/", 1)[1]
        if not source.is_dir():
            raise FileNotFoundError(f"{model_id} is not in weights/; train or download it before building {name}.")
        shutil.copytree(source, folder / "weights" / source.name, ignore=ignore)
    for extra in spec.extra_files:
        shutil.copy(ROOT / extra, folder / f"suite_{extra}")
    shutil.copy(ROOT / "requirements.txt", folder / "requirements.txt")
    if spec.extra_files:
        imports = "from suite_app import create_app"
    else:
        imports = f"from spaces import {spec.modules[-1]}"
    (folder / "app.py").write_text(LAUNCHER.format(title=spec.title, imports=imports, launcher=spec.launcher))
    body = (f"# {spec.title}\n\n{spec.short_description}.\n\n> ⚠️ **{NOT_A_DEVICE}** Its answers can be wrong and "
            "must not be used to diagnose, treat or triage anyone.\n\nBuilt from the MAGIC suite by "
            "`python -m spaces.build`. Models: " + ", ".join(f"[{m}](https://huggingface.co/{m})" for m in spec.models)
            + ".\n")
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(front_matter(spec), sort_keys=False)}---\n\n{body}")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=sorted(SPACES), help=f"Spaces to build: {sorted(SPACES)}.")
    parser.add_argument("--out", default=str(ROOT / "build" / "spaces"))
    args = parser.parse_args(argv)
    for name in args.names:
        print(build_space(name, Path(args.out)))


if __name__ == "__main__":
    main()
