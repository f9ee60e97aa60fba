"""Adapters on a pipeline, saved and loaded with diffusers' standard functions: LoRA and textual inversion."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from ..hub import LORA_WEIGHTS

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def add_lora(pipeline: StableDiffusionPipeline, rank: int = 16, alpha: float | None = None,
             targets: tuple[str, ...] = LORA_TARGETS) -> None:
    """Attach a trainable LoRA (CytoDiff: rank 16) to the UNet's attention projections; the rest stays frozen."""
    from diffusers.training_utils import cast_training_params

    pipeline.unet.requires_grad_(False)
    pipeline.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                         target_modules=list(targets)))
    # the LoRA is what trains: keep it in float32 even on a float16 UNet (fp16 weights and AdamW do not mix)
    cast_training_params(pipeline.unet, dtype=torch.float32)


def save_lora(pipeline: StableDiffusionPipeline, folder: str | os.PathLike) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` (diffusers format) into ``folder``."""
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipeline.unet))
    StableDiffusionPipeline.save_lora_weights(save_directory=str(folder), unet_lora_layers=layers,
                                              safe_serialization=True)
    return Path(folder) / LORA_WEIGHTS


def load_lora(pipeline: StableDiffusionPipeline, name_or_path: str | os.PathLike,
              adapter_name: str = "default") -> None:
    """Load a LoRA saved by ``save_lora`` (or any diffusers-format SD LoRA) into the pipeline: a folder, an
    embedded id (``magic-suite/wbc-generator-feedback-lora``) or a Hub repo id."""
    from ..hub import resolve_model

    try:
        pipeline.load_lora_weights(str(resolve_model(name_or_path)), adapter_name=adapter_name)
    except (RuntimeError, ValueError) as error:  # shapes or module names of another base model
        raise ValueError(f"The LoRA {str(name_or_path)!r} does not fit this pipeline (was it trained for another "
                         f"base model?): {error}") from error


def export_lora(source: str | os.PathLike, destination: str | os.PathLike,
                dtype: torch.dtype | None = torch.float16) -> Path:
    """Copy a LoRA folder (``pytorch_lora_weights.safetensors`` and its card) with the weights cast to ``dtype``;
    ``load_lora`` casts them back to the pipeline's dtype."""
    from safetensors.torch import load_file

    source, destination, dtype = Path(source), Path(destination), dtype or torch.float32
    weights = source / LORA_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{source} has no {LORA_WEIGHTS}: not a LoRA folder saved by save_lora.")
    destination.mkdir(parents=True, exist_ok=True)
    save_file({key: value.to(dtype).contiguous() for key, value in load_file(weights).items()},
              destination / LORA_WEIGHTS)
    if (source / "README.md").is_file():
        shutil.copy(source / "README.md", destination / "README.md")
    return destination


def add_token(pipeline: StableDiffusionPipeline, token: str, initializer: str) -> int:
    """Add a new token (MAGIC stage 1: one per condition) initialised from an existing word; returns its id."""
    tokenizer, encoder = pipeline.tokenizer, pipeline.text_encoder
    if tokenizer.add_tokens([token]) != 1:
        raise ValueError(f"{token!r} is already in the tokenizer; pick a new placeholder such as <{token}-1>.")
    encoder.resize_token_embeddings(len(tokenizer))
    token_id = tokenizer.convert_tokens_to_ids(token)
    init_ids = tokenizer(initializer, add_special_tokens=False).input_ids
    if not init_ids:
        raise ValueError(f"The initializer {initializer!r} has no tokens.")
    with torch.no_grad():
        embeddings = encoder.get_input_embeddings().weight
        embeddings[token_id] = embeddings[init_ids].mean(dim=0)
    return token_id


def save_learned_embeds(pipeline: StableDiffusionPipeline, tokens: list[str], path: str | os.PathLike) -> Path:
    """Save the embeddings of ``tokens`` as ``{token: vector}`` safetensors, the format diffusers'
    ``load_textual_inversion`` reads."""
    weight = pipeline.text_encoder.get_input_embeddings().weight
    embeds = {token: weight[pipeline.tokenizer.convert_tokens_to_ids(token)].detach().cpu().clone()
              for token in tokens}
    save_file(embeds, str(path))
    return Path(path)


def load_learned_embeds(pipeline: StableDiffusionPipeline, path: str | os.PathLike) -> list[str]:
    """Load every token of a ``save_learned_embeds`` file with diffusers' ``load_textual_inversion``."""
    from safetensors.torch import load_file

    tokens = list(load_file(str(path)))
    for token in tokens:
        pipeline.load_textual_inversion(str(path), token=token)
    return tokens
