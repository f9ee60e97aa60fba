"""Resolve model and dataset names to local folders: embedded weights first, then the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

#: The organisation under which the project publishes its weights and datasets.
HUB_ORG = "magic-suite"

#: Folder holding the embedded default models, one Hub-shaped folder per model.
WEIGHTS_DIR = Path(os.environ.get("MAGIC_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "weights"))


#: The weights file diffusers' save_lora_weights writes and load_lora_weights looks for first.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
#: A folder of per-class LoRAs (FOLDER/CLASS/pytorch_lora_weights.safetensors) names its classes and base model here.
CLASS_LORAS_INDEX = "magic_class_loras.json"

#: A weights/ folder with one of these files is an embedded model: a classifier or evaluator, a pipeline, a LoRA,
#: a folder of class LoRAs.
EMBEDDED_MARKERS = ("config.json", "model_index.json", LORA_WEIGHTS, CLASS_LORAS_INDEX)


class ModelNotFoundError(FileNotFoundError):
    """A model name matched neither a local folder, an embedded model nor a reachable Hub repo."""


def embedded_models() -> dict[str, Path]:
    """Map each embedded model's repo id (``magic-suite/NAME``) to its folder under ``weights/``."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {
        f"{HUB_ORG}/{path.name}": path
        for path in sorted(WEIGHTS_DIR.iterdir())
        if path.is_dir() and any((path / name).is_file() for name in EMBEDDED_MARKERS)
    }


def resolve_model(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local folder for a model given as a folder, an embedded repo id or any Hub repo id.

    Order: an existing folder; ``local-dir:PATH``; an embedded model (``magic-suite/NAME`` or bare ``NAME``
    matching a folder in ``weights/``); ``hf-hub:ID`` or a plain repo id, downloaded with ``huggingface_hub``
    (which honours ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``).
    """
    name = str(name_or_path)
    if name.startswith("local-dir:"):
        name = name[len("local-dir:"):]
        if not Path(name).is_dir():
            raise ModelNotFoundError(f"local-dir:{name} is not a folder.")
    if Path(name).is_dir():
        return Path(name)
    if name.startswith("hf-hub:"):
        name = name[len("hf-hub:"):]
    embedded = embedded_models()
    for candidate in (name, f"{HUB_ORG}/{name}"):
        if candidate in embedded and revision is None:
            return embedded[candidate]
    if name.count("/") != 1:
        raise ModelNotFoundError(
            f"{name_or_path!r} is not a folder, an embedded model ({', '.join(embedded) or 'none'}) "
            "or a Hub repo id of the form 'org/name'."
        )
    try:
        return Path(snapshot_download(repo_id=name, revision=revision))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " HF_HUB_OFFLINE is set, so only cached and embedded models can be loaded." if offline else ""
        raise ModelNotFoundError(
            f"Could not get model {name!r} from the Hub ({type(error).__name__}).{hint} "
            f"Embedded models: {', '.join(embedded) or 'none'}."
        ) from error
