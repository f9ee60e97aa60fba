"""Shared fixtures: a tiny Hub-shaped image dataset and a tiny trained classifier, both built in code."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "datasets"))

import contextlib  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

TINY_CLASSES = ["disc", "square", "cross"]
TINY_COUNTS = {"train": [12, 30, 6], "validation": [6, 6, 6], "test": [6, 6, 6]}


def draw_shape(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A coloured shape on a noisy background: easy classes a tiny model can learn in a few steps."""
    background = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    margin = rng.integers(4, 8)
    box = (margin, margin, size - margin, size - margin)
    if kind == "disc":
        draw.ellipse(box, fill=(230, 60, 60))
    elif kind == "square":
        draw.rectangle(box, fill=(60, 230, 60))
    else:
        draw.line((box[0], box[1], box[2], box[3]), fill=(60, 60, 230), width=5)
        draw.line((box[0], box[3], box[2], box[1]), fill=(60, 60, 230), width=5)
    return image


def make_image_dataset(folder: Path, counts: dict[str, list[int]] = TINY_COUNTS, names=TINY_CLASSES,
                       seed: int = 0) -> Path:
    """Write a Hub-shaped dataset (data/SPLIT-00000-of-00001.parquet, image + ClassLabel) into ``folder``."""
    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "source_file": datasets.Value("string")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, per_class in counts.items():
        rows = {"image": [], "label": [], "source_file": []}
        for label, count in enumerate(per_class):
            for index in range(count):
                rows["image"].append(draw_shape(names[label], rng))
                rows["label"].append(label)
                rows["source_file"].append(f"{names[label]}/{split}_{index}.png")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_image_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_dataset) -> Path:
    """A tiny timm classifier trained for a few steps on the tiny dataset and saved Hub-shaped."""
    from magic.classifiers import TrainConfig, train_classifier
    from magic.data import load_image_dataset

    data = load_image_dataset(tiny_dataset)
    config = TrainConfig(architecture="test_efficientnet", pretrained=False, image_size=32, epochs=3,
                         batch_size=8, lr=3e-3, warmup_steps=2, num_workers=0, device="cpu")
    classifier = train_classifier(config, data["train"], data["validation"])
    folder = tmp_path_factory.mktemp("models") / "tiny-classifier"
    classifier.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(demo, **launch_args):
    """Serve a gr.Blocks on a free loopback port (queued, uploads up to 25 MB) and yield a gradio_client for it."""
    from gradio_client import Client

    demo = demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            show_error=True, max_file_size="25mb", **launch_args)
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()
