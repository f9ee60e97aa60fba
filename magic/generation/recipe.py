"""The whole recipe of an embedded generator: train the VAE, then the UNet, on a labelled image dataset."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import datasets
from diffusers import AutoencoderKL, UNet2DConditionModel
from huggingface_hub import ModelCard, ModelCardData

from ..cards import TEMPLATES_DIR, dataset_info
from .components import TinySDConfig, build_pipeline
from .generator import GeneratorInfo
from .train import DenoiserTrainConfig, train_denoiser
from .vae import VAETrainConfig, latent_scaling_factor, train_vae


def train_generator(
    dataset: datasets.Dataset,
    output: str | os.PathLike,
    sizes: TinySDConfig,
    vae_config: VAETrainConfig,
    unet_config: DenoiserTrainConfig,
    prompt_template: str,
    device: str = "cpu",
    dataset_name: str = "",
    repo_id: str = "",
    vae_from: str | os.PathLike | None = None,
    unet_from: str | os.PathLike | None = None,
) -> Path:
    """Build a new pipeline of ``sizes``, train it on ``dataset`` and save it (with a card) to ``output``.

    ``vae_from`` (a pipeline folder, or a folder holding a diffusers ``AutoencoderKL``) reuses an already trained
    VAE of the same sizes, so the UNet can be retrained without repeating the VAE stage. ``unet_from`` (a pipeline
    folder, or a folder holding a diffusers ``UNet2DConditionModel``) starts the UNet stage from that UNet instead
    of a new one: training continues (with a fresh optimiser and schedule) for ``unet_config.steps`` more steps.
    Both together continue a whole pipeline; the latent space must be the one that UNet was trained on.
    """
    names = dataset.features["label"].names
    images = [row["image"] for row in dataset]
    prompts = [prompt_template.format(name=names[label].replace("_", " ")) for label in dataset["label"]]
    pipeline = build_pipeline(sizes).to(device)
    if vae_from is not None:
        folder = Path(vae_from)
        pipeline.vae = AutoencoderKL.from_pretrained(folder / "vae" if (folder / "vae").is_dir() else folder,
                                                     use_safetensors=True).to(device)
        pipeline.vae.requires_grad_(False).eval()
        vae_note = f"reused from {folder.name}"
    else:
        vae_history = train_vae(pipeline.vae, images, vae_config)
        pipeline.vae.register_to_config(scaling_factor=latent_scaling_factor(pipeline.vae, images))
        vae_note = f"{asdict(vae_config)}, final loss {vae_history[-1]['loss']:.4f}"
    if unet_from is not None:
        pipeline.unet = _load_unet(Path(unet_from), pipeline).to(device)
    unet_note = "not trained (--unet-steps 0)"
    if unet_config.steps > 0:
        unet_history = train_denoiser(pipeline, images, prompts, unet_config)
        unet_note = f"{unet_config.to_dict()}, final loss {unet_history[-1]['loss']:.4f}"
    if unet_from is not None:
        unet_note = f"started from the UNet of {Path(unet_from).name}; {unet_note}"
    output = Path(output)
    pipeline.save_pretrained(output, safe_serialization=True)
    GeneratorInfo(label_names=list(names), prompt_template=prompt_template,
                  dataset=Path(dataset_name).name if dataset_name else "",
                  max_prompt_tokens=sizes.max_prompt_tokens).save(output)
    info = dataset_info(dataset_name or "dataset")
    card = ModelCard.from_template(
        ModelCardData(license=info["hub_license"], library_name="diffusers", pipeline_tag="text-to-image",
                      tags=["diffusers", "stable-diffusion-architecture", "medical-imaging", "magic-suite",
                            "research-only"], datasets=[Path(dataset_name).name] if dataset_name else None),
        template_path=str(TEMPLATES_DIR / "generator.md"),
        title=repo_id or output.name, summary=f"Synthetic {', '.join(names)} images.", repo_id=repo_id or str(output),
        example_prompt=prompt_template.format(name=names[0].replace("_", " ")), image_size=sizes.image_size,
        vae_params=f"{sum(p.numel() for p in pipeline.vae.parameters()) / 1e6:.1f}M",
        unet_params=f"{sum(p.numel() for p in pipeline.unet.parameters()) / 1e6:.1f}M",
        latent_channels=sizes.latent_channels, prompt_template=prompt_template, label_list=", ".join(names),
        dataset_description=info["description"], dataset_license=info["license"],
        vae_settings=vae_note,
        unet_settings=unet_note,
    )
    card.save(output / "README.md")
    return output


def _load_unet(folder: Path, pipeline) -> UNet2DConditionModel:
    """The UNet saved in ``folder`` (or ``folder/unet``) in float32, checked against ``pipeline``'s VAE and text
    encoder."""
    unet = UNet2DConditionModel.from_pretrained(folder / "unet" if (folder / "unet").is_dir() else folder,
                                                use_safetensors=True).float()
    expected = {"in_channels": pipeline.vae.config.latent_channels,
                "sample_size": pipeline.vae.config.sample_size // pipeline.vae_scale_factor,
                "cross_attention_dim": pipeline.text_encoder.config.hidden_size}
    wrong = {key: (unet.config[key], value) for key, value in expected.items() if unet.config[key] != value}
    if wrong:
        raise ValueError(f"The UNet in {folder} does not fit this pipeline (found, needed): {wrong}. Continue a "
                         "UNet only with the VAE sizes and text encoder it was trained with.")
    return unet
