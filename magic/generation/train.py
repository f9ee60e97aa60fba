"""Train the generator's denoiser on (image, prompt) pairs: the whole UNet, a LoRA, or new token embeddings.

One loop serves the three adaptation methods of the papers: full training of the small embedded UNet, CytoDiff's
per-class LoRA from k real images, and MAGIC's textual inversion (one token per condition). The VAE and the text
encoder stay frozen unless textual inversion trains the new tokens' embeddings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import compute_snr
from PIL import Image
from torchvision import transforms
from tqdm.auto import tqdm

from ..data.subsets import balance_exponent
from ..precision import autocast_enabled

METHODS = ("full", "lora", "textual-inversion")
BALANCE_CHOICES = ("none", "sampler", "sqrt-sampler")


@dataclass
class DenoiserTrainConfig:
    """Settings of one denoiser training run."""

    method: str = field(default="full", metadata={"help": "full (whole UNet), lora or textual-inversion."})
    steps: int = field(default=1000, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=32, metadata={"help": "Images per step."})
    lr: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW), after a linear warmup."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warmup steps."})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay (not applied to embeddings)."})
    min_snr_gamma: float = field(default=5.0, metadata={"help": "Min-SNR loss weighting gamma (0: plain MSE)."})
    cfg_dropout: float = field(default=0.1, metadata={"help": "Share of prompts replaced by '' (for guidance)."})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank (method=lora)."})
    hflip: bool = field(default=True, metadata={"help": "Random horizontal/vertical flips (no 'up' in cells)."})
    seed: int = field(default=0, metadata={"help": "Seed for noise, timesteps, sampling and flips."})
    ema_decay: float = field(default=0.0, metadata={
        "help": "Keep an exponential moving average of the UNet weights with this decay (method=full; 0: off). "
                "The average, not the last step, is what is saved."})
    cache_latents: bool = field(default=True, metadata={
        "help": "Encode every image once with the frozen VAE instead of at every step (flips then act on latents)."})
    mixed_precision: bool = field(default=True, metadata={
        "help": "bfloat16 autocast on GPU and on CPUs with native bfloat16."})
    balance: str = field(default="none", metadata={
        "help": "How batches are drawn: none (every image equally often), sampler (every distinct prompt, i.e. "
                "class, equally often) or sqrt-sampler (an image of a prompt with n images weighs n ** -0.5)."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.balance not in BALANCE_CHOICES:
            raise ValueError(f"balance must be one of {BALANCE_CHOICES}, got {self.balance!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


def sampling_probabilities(prompts: Sequence[str], balance: str) -> np.ndarray | None:
    """Per-image draw probabilities for ``balance`` (None: uniform): an image whose prompt has ``n`` images weighs
    ``n ** -1`` (sampler) or ``n ** -0.5`` (sqrt-sampler)."""
    if balance == "none":
        return None
    exponent = balance_exponent(balance)
    _, inverse, counts = np.unique(np.asarray(prompts, dtype=object).astype(str), return_inverse=True,
                                   return_counts=True)
    weights = counts[inverse].astype(np.float64) ** exponent
    return weights / weights.sum()


def _pixel_transform(size: int, flips: bool):
    steps = [transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(size)]
    if flips:
        steps += [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])


def trainable_parameters(pipeline: StableDiffusionPipeline, config: DenoiserTrainConfig,
                         new_token_ids: Sequence[int] = ()) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what ``config.method`` trains; returns those parameters."""
    pipeline.vae.requires_grad_(False)
    pipeline.text_encoder.requires_grad_(False)
    if config.method == "full":
        pipeline.unet.requires_grad_(True)
        return [p for p in pipeline.unet.parameters()]
    if config.method == "lora":
        from .adapters import add_lora

        if not getattr(pipeline.unet, "peft_config", None):
            add_lora(pipeline, rank=config.lora_rank)
        return [p for name, p in pipeline.unet.named_parameters() if "lora_" in name and p.requires_grad]
    if not new_token_ids:
        raise ValueError("textual-inversion needs the ids of the new tokens (magic.generation.adapters.add_token).")
    pipeline.unet.requires_grad_(False)
    embeddings = pipeline.text_encoder.get_input_embeddings().weight
    embeddings.requires_grad_(True)
    return [embeddings]


@torch.no_grad()
def encode_latent_parameters(vae, images: Sequence[Image.Image], size: int, batch_size: int = 128,
                             use_amp: bool = False) -> torch.Tensor:
    """The VAE posterior (mean and log-variance, ``[N, 2C, h, w]``) of every image, computed once."""
    to_pixels = _pixel_transform(size, flips=False)
    device = vae.device
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="encode latents", unit="batch"):
        pixels = torch.stack([to_pixels(image.convert("RGB")) for image in images[start:start + batch_size]])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out.append(vae.encode(pixels.to(device, vae.dtype)).latent_dist.parameters.float().cpu())
    return torch.cat(out)


def _random_flips(latents: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flip each latent left-right and/or up-down at random (the VAE is convolutional and was trained with
    flips, so a flipped latent decodes to the flipped image)."""
    flipped = []
    for latent, (left_right, up_down) in zip(latents, rng.integers(0, 2, size=(len(latents), 2))):
        if left_right:
            latent = latent.flip(-1)
        if up_down:
            latent = latent.flip(-2)
        flipped.append(latent)
    return torch.stack(flipped)


@torch.no_grad()
def encode_prompts(pipeline: StableDiffusionPipeline, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Frozen text-encoder outputs for each distinct prompt (and the empty prompt used for guidance dropout)."""
    distinct = sorted(set(prompts) | {""})
    tokens = pipeline.tokenizer(distinct, padding="max_length", max_length=pipeline.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").to(pipeline.text_encoder.device)
    encoded = pipeline.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    return dict(zip(distinct, encoded))


def train_denoiser(
    pipeline: StableDiffusionPipeline,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    config: DenoiserTrainConfig,
    new_token_ids: Sequence[int] = (),
    log: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``pipeline`` in place on ``images`` paired with ``prompts``; returns the loss history."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.training_utils import EMAModel

    if len(images) != len(prompts) or not images:
        raise ValueError(f"Need one prompt per image and at least one image; got {len(images)} / {len(prompts)}.")
    images = list(images)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = pipeline.unet.device
    use_amp = autocast_enabled(device, config.mixed_precision)
    size = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    to_pixels = _pixel_transform(size, config.hflip)
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    params = trainable_parameters(pipeline, config, new_token_ids)
    optimizer = torch.optim.AdamW(params, lr=config.lr,
                                  weight_decay=0.0 if config.method == "textual-inversion" else config.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True, power=3 / 4) \
        if config.method == "full" and config.ema_decay > 0 else None
    original_embeddings = pipeline.text_encoder.get_input_embeddings().weight.detach().clone()
    keep = torch.ones(len(original_embeddings), dtype=torch.bool)
    keep[list(new_token_ids)] = False
    cached_latents = encode_latent_parameters(pipeline.vae, images, size, use_amp=use_amp) \
        if config.cache_latents else None
    cached_text = encode_prompts(pipeline, prompts) if config.method != "textual-inversion" else None
    scaling = pipeline.vae.config.scaling_factor

    probabilities = sampling_probabilities(prompts, config.balance)
    pipeline.unet.train(config.method != "textual-inversion")
    history = []
    for step in tqdm(range(config.steps), desc=f"train {config.method}", unit="step"):
        batch = rng.choice(len(images), size=config.batch_size, replace=len(images) < config.batch_size,
                           p=probabilities)
        texts = [prompts[i] if rng.random() >= config.cfg_dropout else "" for i in batch]
        with torch.no_grad():
            if cached_latents is not None:
                latents = DiagonalGaussianDistribution(cached_latents[torch.as_tensor(batch)].to(device)).sample()
                if config.hflip:
                    latents = _random_flips(latents, rng)
            else:
                pixels = torch.stack([to_pixels(images[i].convert("RGB")) for i in batch]).to(device)
                latents = pipeline.vae.encode(pixels.to(pipeline.vae.dtype)).latent_dist.sample().float()
            latents = latents * scaling
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(batch),), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            if cached_text is not None:
                encoded = torch.stack([cached_text[text] for text in texts]).to(device)
            else:
                tokens = pipeline.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                                            max_length=pipeline.tokenizer.model_max_length).to(device)
                encoded = pipeline.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
            predicted = pipeline.unet(noisy, timesteps, encoder_hidden_states=encoded).sample
        target = noise if noise_scheduler.config.prediction_type == "epsilon" else \
            noise_scheduler.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(predicted.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if config.min_snr_gamma > 0:
            snr = compute_snr(noise_scheduler, timesteps)
            loss = loss * torch.clamp(snr, max=config.min_snr_gamma) / snr
        loss = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.step(params)
        if config.method == "textual-inversion":  # only the new tokens may move
            with torch.no_grad():
                pipeline.text_encoder.get_input_embeddings().weight[keep] = original_embeddings[keep]
        record = {"step": step + 1, "loss": loss.item()}
        history.append(record)
        if log is not None and (step + 1) % 50 == 0:
            log(record)
    if ema is not None:
        ema.copy_to(params)
    pipeline.unet.eval()
    pipeline.unet.requires_grad_(False)
    pipeline.text_encoder.requires_grad_(False)
    return history
