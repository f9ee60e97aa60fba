"""Fine-tune a pipeline's VAE decoder on the UNet's own samples, so that a guide classifier recognises the class
each sample was drawn for, while the decoder keeps reconstructing real images.

A decoder is trained on the encoder's posteriors, but the UNet's guided samples lie off them: a decoder fine-tuned
for class consistency on reconstructions alone made reconstructed basophils more recognisable and generated ones
less (README, *Tried, not shipped*). Here the class term sees the latents that sampling produces. Three terms:

* class: cross-entropy of the guide classifier(s) on the decoded sample against the class it was prompted for
  (random flips first, so the decoder cannot hide the class in one orientation);
* preservation: L1 to the untuned decoder's image of the same latent, so the images change only as far as the
  class needs;
* reconstruction: L1 + perceptual distance on real images, so it is still the VAE's decoder.

Only the decoder (and ``post_quant_conv``) train: the latent space and so the UNet (and any LoRA on it) stay valid.
The guide must not be the classifier that later judges the generator: measure with a held-out judge, and with a
classifier trained on the generated images alone (``benchmarks/synthetic_to_real.py``): on PBC an aligned decoder
raised a held-out judge's class fidelity from 0.87 to 0.998 while such a classifier learned less from its images
(macro-F1 on real test images 0.64 -> 0.60 over 3 seeds; README, *Tried, not shipped*).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from PIL import Image
from tqdm.auto import tqdm

from ..precision import autocast_enabled
from .generator import GenerationSettings, Generator
from .vae import PerceptualLoss, training_transform


@dataclass
class DecoderAlignmentConfig:
    """Settings of one decoder alignment run."""

    guides: str = field(default="", metadata={
        "help": "Guide classifier(s), '+'-joined folders, embedded ids or Hub ids (e.g. magic-suite/wbc-classifier); "
                "their mean cross-entropy on the decoded samples is the class term. Not the judge you measure with."})
    samples_per_class: int = field(default=128, metadata={"help": "Latents sampled per class (the training set)."})
    sample_steps: int = field(default=30, metadata={"help": "Denoising steps of the sampled latents."})
    guidance: str = field(default="5,7", metadata={
        "help": "Comma-separated guidance scales the latents are sampled at (in turn), e.g. the ones you use."})
    lora: str = field(default="", metadata={
        "help": "A LoRA (folder or id) the decoder must also serve: half of each class's latents are sampled with "
                "it, half without ('' = all without)."})
    sample_seed: int = field(default=100_000, metadata={
        "help": "Seed of the first sampled latent (keep clear of the seeds a fidelity benchmark uses: 0, 1, ...)."})
    sample_batch_size: int = field(default=32, metadata={"help": "Latents per pipeline call."})
    steps: int = field(default=600, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=32, metadata={"help": "Sampled latents per step."})
    real_batch_size: int = field(default=32, metadata={"help": "Real images per step (reconstruction term)."})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warmup steps before the cosine decay."})
    class_weight: float = field(default=1.0, metadata={"help": "Weight of the guide's cross-entropy."})
    preserve_weight: float = field(default=1.0, metadata={
        "help": "Weight of the L1 distance to the untuned decoder's image of the same latent (0: off)."})
    perceptual_weight: float = field(default=1.0, metadata={
        "help": "Weight of the perceptual distance (ImageNet EfficientNet-Lite0 features) on real reconstructions."})
    mixed_precision: bool = field(default=True, metadata={
        "help": "bfloat16 autocast (on GPU, and on CPUs with native bfloat16)."})
    seed: int = field(default=0, metadata={"help": "Seed for batches and flips."})

    def __post_init__(self):
        if not self.guides.strip():
            raise ValueError("DecoderAlignmentConfig needs `guides`: one or more classifiers ('+'-joined) trained on "
                             "real images of the generator's classes, e.g. magic-suite/wbc-classifier.")
        try:
            scales = [float(value) for value in self.guidance.split(",") if value.strip()]
        except ValueError:
            raise ValueError(f"guidance must be comma-separated numbers, got {self.guidance!r}.") from None
        if not scales:
            raise ValueError("guidance needs at least one scale, e.g. '5,7'.")
        for name in ("samples_per_class", "sample_steps", "steps", "batch_size", "real_batch_size",
                     "sample_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("class_weight", "preserve_weight", "perceptual_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")

    @property
    def guidance_scales(self) -> list[float]:
        return [float(value) for value in self.guidance.split(",") if value.strip()]

    @property
    def guide_specs(self) -> list[str]:
        return [spec.strip() for spec in self.guides.split("+") if spec.strip()]

    def to_dict(self) -> dict:
        return asdict(self)


class GuideClassifier(torch.nn.Module):
    """A frozen saved classifier that takes decoded images in [-1, 1] and returns logits over its classes."""

    def __init__(self, name_or_path: str):
        super().__init__()
        self.network = PerceptualLoss(name_or_path)
        from ..classifiers import load_classifier

        self.label_names = load_classifier(name_or_path).label_names
        self.name = name_or_path

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.logits(pixels)


@torch.no_grad()
def sample_latents(generator: Generator, class_names: Sequence[str], config: DecoderAlignmentConfig,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set of the class term: ``samples_per_class`` latents per class (diffusers' scaling, as
    ``vae.decode`` takes them after dividing by ``scaling_factor``) and their class indices."""
    if generator.info is None:
        raise ValueError("Decoder alignment needs a pipeline with magic_generator.json (its classes and prompts).")
    with_lora = config.samples_per_class // 2 if config.lora else 0
    plan = [(False, config.samples_per_class - with_lora), (True, with_lora)]
    latents, labels = [], []
    scales = config.guidance_scales
    call = 0
    for use_lora, count in plan:
        if count == 0:
            continue
        if use_lora:
            from .adapters import load_lora

            load_lora(generator.pipeline, config.lora, adapter_name="alignment")
        try:
            for index, name in enumerate(class_names):
                for start in tqdm(range(0, count, config.sample_batch_size), leave=False,
                                  desc=f"sample {name}{' + LoRA' if use_lora else ''}"):
                    size = min(config.sample_batch_size, count - start)
                    settings = GenerationSettings(steps=config.sample_steps, guidance=scales[call % len(scales)])
                    first = config.sample_seed + (1_000_000 if use_lora else 0) + index * 10_000 + start
                    latents.append(generator.text_to_latents(generator.info.prompt(name), settings, size,
                                                             seeds=list(range(first, first + size))).cpu())
                    labels += [index] * size
                    call += 1
        finally:
            if use_lora:
                generator.pipeline.unload_lora_weights()
    return torch.cat(latents), torch.tensor(labels)


def align_decoder(generator: Generator, real_images: Sequence[Image.Image], config: DecoderAlignmentConfig,
                  log: Callable[[dict], None] | None = None) -> list[dict]:
    """Fine-tune ``generator``'s VAE decoder in place (see the module docstring); returns the loss history, whose
    records also carry the guides' accuracy on each step's decoded samples."""
    if generator.info is None:
        raise ValueError("Decoder alignment needs a pipeline with magic_generator.json (its classes and prompts).")
    class_names = list(generator.info.label_names)
    guides = [GuideClassifier(spec) for spec in config.guide_specs]
    for guide in guides:
        missing = sorted(set(class_names) - set(guide.label_names))
        if missing:
            raise ValueError(f"The guide {guide.name!r} does not know the generator's classes {missing}: use a "
                             "classifier trained on the same classes.")
    # guide logits in the generator's class order
    orders = [torch.tensor([guide.label_names.index(name) for name in class_names]) for guide in guides]

    latents, labels = sample_latents(generator, class_names, config)
    vae = generator.pipeline.vae
    device = vae.device
    vae.float()
    scaling = vae.config.scaling_factor
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    with torch.no_grad():  # the untuned decoder's images, the preservation targets
        originals = torch.cat([vae.decode(latents[i:i + 64].to(device) / scaling).sample.float().cpu()
                               for i in range(0, len(latents), 64)])
    perceptual = PerceptualLoss("imagenet").to(device) if config.perceptual_weight > 0 else None
    guides = [guide.to(device) for guide in guides]
    to_pixels = training_transform(vae.config.sample_size)

    vae.requires_grad_(False)
    for module in (vae.decoder, vae.post_quant_conv):
        module.requires_grad_(True)
    vae.train()
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    use_amp = autocast_enabled(device, config.mixed_precision)
    history = []
    for step in tqdm(range(config.steps), desc="align decoder", unit="step"):
        chosen = torch.from_numpy(rng.choice(len(latents), size=config.batch_size,
                                             replace=len(latents) < config.batch_size))
        z, y, target = latents[chosen].to(device), labels[chosen].to(device), originals[chosen].to(device)
        real = rng.choice(len(real_images), size=config.real_batch_size,
                          replace=len(real_images) < config.real_batch_size)
        pixels = torch.stack([to_pixels(real_images[i].convert("RGB")) for i in real]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            decoded = vae.decode(z / scaling).sample.float()
            flipped = decoded
            if rng.random() < 0.5:
                flipped = flipped.flip(-1)
            if rng.random() < 0.5:
                flipped = flipped.flip(-2)
            class_loss, correct = decoded.new_zeros(()), 0.0
            for guide, order in zip(guides, orders):
                logits = guide(flipped).float()[:, order.to(device)]
                class_loss = class_loss + F.cross_entropy(logits, y) / len(guides)
                correct += (logits.argmax(-1) == y).float().mean().item() / len(guides)
            preserve = F.l1_loss(decoded, target)
            with torch.no_grad():
                posterior = vae.encode(pixels).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample.float()
            l1 = F.l1_loss(reconstruction, pixels)
            loss = l1 + config.class_weight * class_loss + config.preserve_weight * preserve
            if perceptual is not None:
                loss = loss + config.perceptual_weight * perceptual(reconstruction, pixels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        record = {"step": step + 1, "loss": loss.item(), "class": class_loss.item(), "guide_accuracy": correct,
                  "preserve": preserve.item(), "l1": l1.item()}
        history.append(record)
        if log is not None and (step + 1) % 50 == 0:
            log(record)
    vae.requires_grad_(False).eval()
    return history
