"""Fine-tune a generator's LoRA on evaluator feedback: DPO on preference pairs, or reward-weighted training (RFT).

**DPO** follows Diffusion-DPO (Wallace et al. 2023), the offline form of D3PO's objective that MAGIC uses: for a
pair (winner ``w``, loser ``l``) of images of one prompt, both are noised with the same noise and timestep and

    loss = -log sigmoid( -beta/2 * [ (e_w - e_w^ref) - (e_l - e_l^ref) ] )

where ``e`` is the LoRA model's denoising error and ``e^ref`` that of the same UNet with the LoRA switched off (the
frozen reference). It needs only the images and who won, so pairs written by hand by an expert train the same way.
Pairs that MAGIC's rules mark *both win* add a plain denoising loss on both images (weight ``sft_weight``): they are
good examples to imitate but give no direction between them. *Both lose* pairs carry no usable signal and are
skipped (counted in the history). Conditions whose pairs all lose give DPO no signal, yet the shared LoRA still
moves their images (the loop measured basophils drifting away from their class); *anchor* images of such
conditions keep them where the reference put them, by the distillation term
``anchor_weight * beta * |e_model - e_ref|^2`` on the predicted noise (in units of ``beta`` so that it balances the
DPO term at any strength).

**RFT** (reward-weighted fine-tuning): every judged image is a training example whose denoising loss is weighted
by ``exp((r - mean r) / temperature)`` (normalised to mean 1 in each batch), where the reward ``r`` is the share of
checklist items met (the evaluator's 0/1 labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.optimization import get_cosine_schedule_with_warmup
from PIL import Image

from ..evaluation.preferences import BOTH_LOSE, BOTH_WIN, PreferencePair
from ..generation.adapters import add_lora
from ..generation.train import _pixel_transform, encode_prompts
from ..precision import autocast_enabled

METHODS = ("dpo", "rft")


@dataclass
class FeedbackTrainConfig:
    """Settings of one fine-tuning step of the feedback loop."""

    method: str = field(default="dpo", metadata={"help": "dpo (preference pairs) or rft (reward-weighted)."})
    steps: int = field(default=60, metadata={"help": "Optimiser steps per round."})
    batch_size: int = field(default=16, metadata={
        "help": "Pairs (dpo) or images (rft) per step, drawn with replacement when there are fewer."})
    lr: float = field(default=2e-4, metadata={"help": "Peak LoRA learning rate (AdamW)."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warmup steps."})
    beta: float = field(default=1000.0, metadata={
        "help": "DPO strength: how far the LoRA may move from the reference to separate winners from losers."})
    anchor_weight: float = field(default=0.0, metadata={
        "help": "DPO: weight (in units of beta) of keeping the reference's noise prediction on anchor images, the "
                "conditions whose pairs all lost (the loop passes them; 0: off)."})
    sft_weight: float = field(default=0.5, metadata={"help": "Weight of the denoising loss on 'both win' pairs."})
    temperature: float = field(default=0.2, metadata={"help": "RFT: softmax temperature of the reward weights."})
    lora_rank: int = field(default=16, metadata={"help": "Rank of the LoRA added when the pipeline has none."})
    seed: int = field(default=0, metadata={"help": "Seed for batches, noise and timesteps."})
    mixed_precision: bool = field(default=True, metadata={"help": "bfloat16 autocast where it is fast."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute the UNet's activations in the backward pass: the same gradients in much less memory, "
                "for more compute (SD 2.1-base at 512 px with many pairs per step)."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1.")
        if self.anchor_weight < 0:
            raise ValueError(f"anchor_weight must be >= 0, got {self.anchor_weight}.")

    @property
    def uses_anchors(self) -> bool:
        """Whether training applies the anchor term (DPO with a positive ``anchor_weight``)."""
        return self.method == "dpo" and self.anchor_weight > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Example:
    """One judged image for fine-tuning: the image, the prompt it answers and its reward in [0, 1]."""

    image: Image.Image
    prompt: str
    reward: float = 1.0


def _encode(pipeline: StableDiffusionPipeline, images: Sequence[Image.Image]) -> torch.Tensor:
    to_pixels = _pixel_transform(pipeline.unet.config.sample_size * pipeline.vae_scale_factor, flips=False)
    pixels = torch.stack([to_pixels(image.convert("RGB")) for image in images]).to(pipeline.device,
                                                                                   pipeline.vae.dtype)
    with torch.no_grad():
        return pipeline.vae.encode(pixels).latent_dist.mode().float() * pipeline.vae.config.scaling_factor


def _prompt_states(pipeline: StableDiffusionPipeline, prompts: Sequence[str],
                   encoded: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Text-encoder states of ``prompts``, from ``encoded`` (the frozen encoder's outputs, computed once) or now."""
    encoded = encoded if encoded is not None else encode_prompts(pipeline, prompts)
    return torch.stack([encoded[prompt] for prompt in prompts])


def _predict_noise(unet, noisy, timesteps, states, use_amp: bool) -> torch.Tensor:
    with torch.autocast(noisy.device.type, dtype=torch.bfloat16, enabled=use_amp):
        return unet(noisy, timesteps, encoder_hidden_states=states).sample.float()


def _denoising_error(unet, noisy, timesteps, states, target, use_amp: bool) -> torch.Tensor:
    predicted = _predict_noise(unet, noisy, timesteps, states, use_amp)
    return F.mse_loss(predicted, target, reduction="none").mean(dim=(1, 2, 3))


def _reference_noise(unet, noisy, timesteps, states, use_amp: bool) -> torch.Tensor:
    """The frozen reference's prediction: the same UNet with its LoRA switched off."""
    with torch.no_grad():
        unet.disable_adapters()
        try:
            return _predict_noise(unet, noisy, timesteps, states, use_amp)
        finally:
            unet.enable_adapters()


@contextmanager
def _gradient_checkpointing(unet, enabled: bool):
    """Gradient checkpointing on the UNet while inside, when ``enabled``; its previous setting restored after."""
    was_on = unet.is_gradient_checkpointing
    if enabled and not was_on:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if enabled and not was_on:
            unet.disable_gradient_checkpointing()


def ensure_lora(pipeline: StableDiffusionPipeline, rank: int = 16) -> list[torch.nn.Parameter]:
    """The pipeline's trainable LoRA parameters, adding a LoRA first if it has none."""
    if not getattr(pipeline.unet, "peft_config", None):
        add_lora(pipeline, rank=rank)
    params = [p for name, p in pipeline.unet.named_parameters() if "lora_" in name]
    for param in params:
        param.requires_grad_(True)
    return params


def train_on_feedback(
    pipeline: StableDiffusionPipeline,
    config: FeedbackTrainConfig,
    pairs: Sequence[tuple[PreferencePair, Image.Image, Image.Image]] = (),
    examples: Sequence[Example] = (),
    log: Callable[[dict], None] | None = None,
    anchors: Sequence[Example] = (),
) -> list[dict]:
    """Train the pipeline's LoRA in place; ``pairs`` (with their two images) for DPO, ``examples`` for RFT;
    ``anchors`` (DPO with ``anchor_weight`` > 0): images whose prompts should keep the reference's behaviour.

    Returns one record per step (loss, and for DPO the share of pairs the model already ranks right).
    """
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    device = pipeline.device
    use_amp = autocast_enabled(device, config.mixed_precision)
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    if config.method == "dpo":
        ranked = [(pair.prompt, a, b) if pair.win_a else (pair.prompt, b, a)
                  for pair, a, b in pairs if pair.win_a != pair.win_b]
        imitate = [Example(image, pair.prompt) for pair, a, b in pairs if pair.rule == BOTH_WIN for image in (a, b)]
        skipped = sum(pair.rule == BOTH_LOSE for pair, _, _ in pairs)
        if not ranked and not imitate:
            raise ValueError(f"No pair has a winner ({len(pairs)} pairs, {skipped} 'both lose'): nothing to learn "
                             "from. Generate more images per round or use method='rft'.")
    else:
        if not examples:
            raise ValueError("RFT needs judged examples (image, prompt, reward).")
        ranked, imitate, skipped = [], list(examples), 0
    anchors = list(anchors) if config.uses_anchors else []
    encoded = encode_prompts(pipeline, [prompt for prompt, _, _ in ranked] + [e.prompt for e in imitate + anchors])
    params = ensure_lora(pipeline, config.lora_rank)
    pipeline.vae.requires_grad_(False)
    pipeline.text_encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    with _gradient_checkpointing(pipeline.unet, config.gradient_checkpointing):
        pipeline.unet.train()
        history = []
        for step in range(config.steps):
            loss = torch.zeros((), device=device)
            record: dict = {"step": step + 1, "pairs": len(ranked), "imitate": len(imitate), "both_lose": skipped}
            if ranked:
                chosen = [ranked[i] for i in rng.choice(len(ranked), size=config.batch_size,
                                                        replace=len(ranked) < config.batch_size)]
                prompts = [prompt for prompt, _, _ in chosen]
                latents = _encode(pipeline, [w for _, w, _ in chosen] + [lo for _, _, lo in chosen])
                noise = torch.randn_like(latents[: len(chosen)]).repeat(2, 1, 1, 1)
                timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(chosen),),
                                          device=device).repeat(2)
                noisy = scheduler.add_noise(latents, noise, timesteps)
                states = _prompt_states(pipeline, prompts * 2, encoded)
                model_error = _denoising_error(pipeline.unet, noisy, timesteps, states, noise, use_amp)
                reference = _reference_noise(pipeline.unet, noisy, timesteps, states, use_amp)
                reference_error = F.mse_loss(reference, noise, reduction="none").mean(dim=(1, 2, 3))
                won, lost = (model_error - reference_error).chunk(2)
                inside = -0.5 * config.beta * (won - lost)
                loss = loss - F.logsigmoid(inside).mean()
                record["ranked_right"] = float((inside > 0).float().mean())
            if imitate:
                weight = 1.0 if config.method == "rft" else config.sft_weight
                chosen = [imitate[i] for i in rng.choice(len(imitate), size=config.batch_size,
                                                         replace=len(imitate) < config.batch_size)]
                latents = _encode(pipeline, [example.image for example in chosen])
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(chosen),), device=device)
                states = _prompt_states(pipeline, [example.prompt for example in chosen], encoded)
                error = _denoising_error(pipeline.unet, scheduler.add_noise(latents, noise, timesteps), timesteps,
                                         states, noise, use_amp)
                if config.method == "rft":
                    rewards = torch.tensor([example.reward for example in chosen], device=device)
                    weights = torch.softmax((rewards - rewards.mean()) / config.temperature, dim=0) * len(chosen)
                    error = error * weights
                loss = loss + weight * error.mean()
            if anchors:
                chosen = [anchors[i] for i in rng.choice(len(anchors), size=config.batch_size,
                                                         replace=len(anchors) < config.batch_size)]
                latents = _encode(pipeline, [example.image for example in chosen])
                timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(chosen),), device=device)
                noisy = scheduler.add_noise(latents, torch.randn_like(latents), timesteps)
                states = _prompt_states(pipeline, [example.prompt for example in chosen], encoded)
                drift = F.mse_loss(_predict_noise(pipeline.unet, noisy, timesteps, states, use_amp),
                                   _reference_noise(pipeline.unet, noisy, timesteps, states, use_amp))
                loss = loss + config.anchor_weight * config.beta * drift
                record.update(anchors=len(anchors), anchor_drift=drift.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            record["loss"] = loss.item()
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"Feedback training diverged at step {step + 1}; lower lr or beta.")
            history.append(record)
            if log is not None:
                log(record)
    pipeline.unet.eval()
    for param in params:
        param.requires_grad_(False)
    return history
