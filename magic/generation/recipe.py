"""The whole recipe of an embedded generator: train the VAE, then the UNet, on a labelled image dataset."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import datasets
from huggingface_hub import ModelCard, ModelCardData

from ..cards import TEMPLATES_DIR, dataset_info
from .components import TinySDConfig, build_pipeline
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
) -> Path:
    """Build a new pipeline of ``sizes``, train it on ``dataset`` and save it (with a card) to ``output``."""
    names = dataset.features["label"].names
    images = [row["image"] for row in dataset]
    prompts = [prompt_template.format(name=names[label].replace("_", " ")) for label in dataset["label"]]
    pipeline = build_pipeline(sizes).to(device)
    vae_history = train_vae(pipeline.vae, images, vae_config)
    pipeline.vae.register_to_config(scaling_factor=latent_scaling_factor(pipeline.vae, images))
    unet_history = train_denoiser(pipeline, images, prompts, unet_config)
    output = Path(output)
    pipeline.save_pretrained(output, safe_serialization=True)
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
        vae_settings=f"{asdict(vae_config)}, final loss {vae_history[-1]['loss']:.4f}",
        unet_settings=f"{unet_config.to_dict()}, final loss {unet_history[-1]['loss']:.4f}",
    )
    card.save(output / "README.md")
    return output
