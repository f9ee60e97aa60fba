"""Train the small pipeline's VAE: L1 + perceptual (frozen ImageNet EfficientNet-Lite0 features) + a small KL.

The design notes measured that a plain VAE blurs granules (basophils, immature granulocytes); the perceptual term
compares multi-scale ImageNet feature maps of input and reconstruction so texture, not just colour, is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import timm
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from PIL import Image
from torchvision import transforms
from tqdm.auto import tqdm

from ..precision import autocast_enabled


@dataclass
class VAETrainConfig:
    """Settings of one VAE training run."""

    steps: int = field(default=2000, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=32, metadata={"help": "Images per step."})
    lr: float = field(default=4e-4, metadata={"help": "AdamW learning rate."})
    kl_weight: float = field(default=1e-6, metadata={"help": "Weight of the KL term."})
    perceptual_weight: float = field(default=0.5, metadata={"help": "Weight of the feature-map term (0: off)."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warmup steps before the cosine decay."})
    decoder_only: bool = field(default=False, metadata={
        "help": "Train only the decoder (the encoder and so the latent space stay fixed): improves the images of "
                "an already trained pipeline without retraining its UNet, as SD's fine-tuned decoders do."})
    mixed_precision: bool = field(default=True, metadata={
        "help": "bfloat16 autocast (on GPU, and on CPUs with native bfloat16; about 3x faster there)."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and noise."})

    def to_dict(self) -> dict:
        return asdict(self)


class PerceptualLoss(torch.nn.Module):
    """Mean L1 distance between normalised feature maps of a frozen ImageNet EfficientNet-Lite0 (3 scales)."""

    def __init__(self):
        super().__init__()
        from ..classifiers.pretrained import load_packaged_weights

        self.net = timm.create_model("tf_efficientnet_lite0")
        load_packaged_weights(self.net, "tf_efficientnet_lite0")
        self.net.requires_grad_(False).eval()

    def _features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return self.net.forward_intermediates(pixels, indices=(1, 2, 3), intermediates_only=True)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # both in [-1, 1], which is the network's own normalisation (mean = std = 0.5)
        loss = reconstruction.new_zeros(())
        for a, b in zip(self._features(reconstruction), self._features(target)):
            loss = loss + F.l1_loss(F.normalize(a, dim=1), F.normalize(b, dim=1))
        return loss


def train_vae(vae: AutoencoderKL, images: Sequence[Image.Image], config: VAETrainConfig,
              log: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``vae`` in place on ``images`` (resized to its sample size); returns the loss history."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = vae.device
    size = vae.config.sample_size
    to_pixels = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(size), transforms.RandomHorizontalFlip(),
                                    transforms.RandomVerticalFlip(), transforms.ToTensor(),
                                    transforms.Normalize([0.5], [0.5])])
    perceptual = PerceptualLoss().to(device) if config.perceptual_weight > 0 else None
    vae.requires_grad_(False)
    trained = [vae.decoder, vae.post_quant_conv] if config.decoder_only else [vae]
    for module in trained:
        module.requires_grad_(True)
    vae.train()
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    use_amp = autocast_enabled(device, config.mixed_precision)
    history = []
    for step in tqdm(range(config.steps), desc="train vae", unit="step"):
        batch = rng.choice(len(images), size=config.batch_size, replace=len(images) < config.batch_size)
        pixels = torch.stack([to_pixels(images[i].convert("RGB")) for i in batch]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            with torch.set_grad_enabled(not config.decoder_only):
                posterior = vae.encode(pixels).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample.float()
            l1 = F.l1_loss(reconstruction, pixels)
            loss = l1
            if not config.decoder_only:
                loss = loss + config.kl_weight * posterior.kl().float().mean() / pixels[0].numel()
            if perceptual is not None:
                loss = loss + config.perceptual_weight * perceptual(reconstruction, pixels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        record = {"step": step + 1, "loss": loss.item(), "l1": l1.item()}
        history.append(record)
        if log is not None and (step + 1) % 100 == 0:
            log(record)
    vae.requires_grad_(False).eval()
    return history


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: Sequence[Image.Image], count: int = 256) -> float:
    """1 / std of the latents of up to ``count`` images, so the diffusion sees unit-variance latents (SD's 0.18215)."""
    size = vae.config.sample_size
    to_pixels = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                    transforms.Normalize([0.5], [0.5])])
    pixels = torch.stack([to_pixels(image.convert("RGB")) for image in list(images)[:count]]).to(vae.device)
    return float(1.0 / vae.encode(pixels).latent_dist.sample().std())
