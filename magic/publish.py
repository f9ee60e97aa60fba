"""Publish a trained model or a Hub-shaped dataset folder to the Hugging Face Hub, safetensors only."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, metadata_load
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from .hub import CLASS_LORAS_INDEX, LORA_WEIGHTS

#: Files never uploaded: Python caches and Finder litter.
JUNK_PATTERNS = ["*__pycache__/*", "*.DS_Store", "*.pyc"]

#: Pickle-based formats, which can run code when loaded; the project publishes safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")


#: Card metadata keys that only dataset cards use.
DATASET_CARD_KEYS = {"dataset_info", "configs", "task_categories", "task_ids", "size_categories", "pretty_name",
                     "source_datasets", "annotations_creators", "language_creators", "multilinguality"}


class PublishError(ValueError):
    """A folder is not fit to publish; the message says what to fix."""


def files_to_upload(folder: str | os.PathLike) -> list[str]:
    """The folder's files, relative and '/'-separated, that a publish would upload (junk left out)."""
    root = Path(folder)
    paths = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=JUNK_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def card_metadata(folder: str | os.PathLike) -> dict | None:
    """The YAML metadata of ``folder/README.md``; None without a README.md, {} without metadata."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    try:
        return metadata_load(readme) or {}
    except Exception as error:  # yaml.YAMLError or a non-mapping block
        raise PublishError(f"{readme} has unreadable YAML metadata ({error}); fix the block between the '---' "
                           "lines.") from error


def detect_repo_type(folder: str | os.PathLike) -> str:
    """The repo type a folder publishes as: "space" when its card names an ``sdk`` (built by
    ``python -m spaces.build``), "dataset" with data/*.parquet or a dataset-style card, else "model"."""
    root = Path(folder)
    metadata = card_metadata(root) or {}
    if "sdk" in metadata:
        return "space"
    if any((root / "data").glob("*.parquet")):
        return "dataset"
    return "dataset" if DATASET_CARD_KEYS & set(metadata) else "model"


def check_publishable(folder: str | os.PathLike, repo_type: str | None = None) -> str:
    """Raise PublishError unless ``folder`` can be published; return its repo type."""
    root = Path(folder)
    if not root.is_dir():
        raise PublishError(f"{root} is not a folder: pass the folder a training run or a dataset export wrote.")
    files = files_to_upload(root)
    pickles = [path for path in files if path.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise PublishError(f"{root} contains pickle-format files ({', '.join(pickles)}); the project publishes "
                           "safetensors only: convert them (save_pretrained or safetensors.torch.save_file) and "
                           "delete them.")
    metadata = card_metadata(root)
    if metadata is None:
        raise PublishError(f"{root} has no README.md card: write one first (python -m magic write-card --model "
                           f"{root} for a classifier).")
    if not metadata.get("license"):
        raise PublishError(f"{root / 'README.md'} has no 'license' in its YAML metadata: add e.g. "
                           "'license: cc-by-4.0' between the '---' lines.")
    repo_type = repo_type or detect_repo_type(root)
    if repo_type not in ("model", "dataset", "space"):
        raise PublishError(f"repo type must be 'model', 'dataset' or 'space', not {repo_type!r}.")
    if repo_type == "space" and (not metadata.get("sdk") or "app_file" not in metadata):
        raise PublishError(f"{root / 'README.md'} needs 'sdk' and 'app_file' in its metadata to publish as a Space "
                           "(python -m spaces.build writes them).")
    if repo_type == "model" and not is_model_folder(files):
        raise PublishError(f"{root} is not a complete model folder: it needs config.json and *.safetensors weights "
                           "(save the model with save_pretrained), a diffusers pipeline (model_index.json and its "
                           f"components' *.safetensors), a LoRA ({LORA_WEIGHTS} from save_lora_weights) or a folder "
                           f"of class LoRAs ({CLASS_LORAS_INDEX}, from train-class-loras).")
    return repo_type


def is_model_folder(files: list[str]) -> bool:
    """Whether ``files`` (as ``files_to_upload`` lists them) make a loadable model repo: a model with config.json
    and safetensors weights (timm, transformers), a diffusers pipeline (model_index.json with safetensors in its
    component folders), a diffusers LoRA (``pytorch_lora_weights.safetensors``, loaded with load_lora_weights) or
    a folder of class LoRAs (``magic_class_loras.json`` and CLASS/``pytorch_lora_weights.safetensors``)."""
    top_level = {path for path in files if "/" not in path}
    if LORA_WEIGHTS in top_level:
        return True
    if CLASS_LORAS_INDEX in top_level:
        return any(path.count("/") == 1 and path.endswith(f"/{LORA_WEIGHTS}") for path in files)
    if "model_index.json" in top_level:
        return any(path.endswith(".safetensors") for path in files)
    return "config.json" in top_level and any(path.endswith(".safetensors") for path in top_level)


def publish(
    artifact_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    repo_type: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Check ``artifact_dir`` and upload it to the Hub repo ``repo_id`` (created if needed); return the commit URL.

    ``repo_type`` None picks "dataset" or "model" from the folder. ``token`` None uses the usual Hugging Face
    login (``HF_TOKEN`` or the saved token); ``endpoint`` None uses ``HF_ENDPOINT`` or huggingface.co.
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"repo id must look like ORG/NAME, not {repo_id!r}.")
    repo_type = check_publishable(artifact_dir, repo_type)
    api = HfApi(endpoint=endpoint, token=token)
    space_sdk = (card_metadata(artifact_dir) or {}).get("sdk") if repo_type == "space" else None
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    with _complete_folder(artifact_dir) as folder:
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, revision=revision,
                                 commit_message=commit_message or f"Publish {Path(artifact_dir).name} with magic",
                                 ignore_patterns=list(JUNK_PATTERNS))
    return info.commit_url


@contextlib.contextmanager
def _complete_folder(artifact_dir: str | os.PathLike):
    """The folder to upload: ``artifact_dir`` itself, or, for an embedded pipeline that leaves its text encoder to
    a wheel, a temporary complete copy (so ``StableDiffusionPipeline.from_pretrained(REPO)`` works anywhere)."""
    folder = Path(artifact_dir)
    if not (folder / "model_index.json").is_file() or (folder / "text_encoder").is_dir():
        yield folder
        return
    from .generation.generator import export_pipeline

    with tempfile.TemporaryDirectory(prefix="magic-publish-") as staging:
        yield export_pipeline(folder, Path(staging) / folder.name, dtype=_weights_dtype(folder),
                              include_text_encoder=True)


def _weights_dtype(folder: Path):
    """The dtype the pipeline's UNet is stored in (kept when the folder is completed for upload)."""
    import torch
    from safetensors import safe_open

    weights = next((folder / "unet").glob("*.safetensors"))
    with safe_open(str(weights), "pt") as handle:
        return handle.get_tensor(next(iter(handle.keys()))).dtype if handle.keys() else torch.float32
