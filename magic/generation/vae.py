"""Train the small pipeline's VAE: L1 + perceptual + class consistency + adversarial terms + a small KL.

The design notes measured that a plain VAE blurs granules (basophils, immature granulocytes); the perceptual term
compares multi-scale feature maps of input and reconstruction so texture, not just colour, is kept. The feature
network is the packaged ImageNet EfficientNet-Lite0 by default, or a classifier trained on the domain (for blood
cells: ``magic-suite/wbc-classifier``), whose features are the ones that tell the classes apart; with such a
classifier a *class-consistency* term (KL between its class probabilities on the input and on the reconstruction)
asks the reconstruction to keep what makes a basophil a basophil. The *adversarial* term is Latent Diffusion's: a
PatchGAN discriminator with hinge loss, its weight scaled by the ratio of the reconstruction and adversarial gradient
norms at the decoder's last layer, switched on after a warm start. Judge the result with a different classifier.
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
    perceptual_network: str = field(default="imagenet", metadata={
        "help": "Feature network of the perceptual term: 'imagenet' (the packaged ImageNet EfficientNet-Lite0) or "
                "an image classifier (folder or model id, e.g. magic-suite/wbc-classifier) trained on the domain."})
    consistency_weight: float = field(default=0.0, metadata={
        "help": "Weight of the class-consistency term: KL between the classifier's class probabilities on the "
                "input and on its reconstruction (needs a classifier as perceptual_network; 0: off)."})
    adversarial_weight: float = field(default=0.0, metadata={
        "help": "Weight of the adversarial term (PatchGAN discriminator, hinge loss, LDM's adaptive weight; "
                "0: off). Restores the texture (granules) that L1 and perceptual losses blur."})
    adversarial_start: int = field(default=0, metadata={
        "help": "Step at which the discriminator and the adversarial term start (LDM's disc_start)."})
    discriminator_layers: int = field(default=2, metadata={
        "help": "Strided layers of the PatchGAN discriminator (2: 34-pixel patches, for 64 px images)."})
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
    """Mean L1 distance between normalised feature maps (3 scales) of a frozen network, and optionally the KL
    between its class probabilities on target and reconstruction.

    ``network`` is ``"imagenet"`` (the packaged ImageNet EfficientNet-Lite0) or any saved image classifier
    (folder or model id) with timm's ``forward_intermediates``; images are resized to its input size and
    normalised with its mean and std.
    """

    def __init__(self, network: str = "imagenet"):
        super().__init__()
        if network == "imagenet":
            from ..classifiers.pretrained import load_packaged_weights

            self.net = timm.create_model("tf_efficientnet_lite0")
            load_packaged_weights(self.net, "tf_efficientnet_lite0")
            self.size, mean, std, self.has_classes = None, (0.5,) * 3, (0.5,) * 3, False
        else:
            from ..classifiers import load_classifier

            classifier = load_classifier(network)
            if not hasattr(classifier.model, "forward_intermediates"):
                raise ValueError(f"The perceptual network {network!r} ({classifier.architecture}) has no timm "
                                 "forward_intermediates; choose a timm CNN classifier or 'imagenet'.")
            self.net = classifier.model.float()
            preprocess = classifier.preprocess
            self.size, mean, std = preprocess.input_size[-1], preprocess.mean, preprocess.std
            self.has_classes = True
        self.net.requires_grad_(False).eval()
        # pixels arrive in [-1, 1]; the network wants (x - mean) / std of [0, 1] pixels
        self.register_buffer("scale", 0.5 / torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (0.5 - torch.tensor(mean)).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1),
                             persistent=False)

    def _prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.size is not None and pixels.shape[-1] != self.size:
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return pixels * self.scale + self.shift

    def _features(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if not self.has_classes:
            return self.net.forward_intermediates(pixels, indices=(1, 2, 3), intermediates_only=True), None
        final, intermediates = self.net.forward_intermediates(pixels, indices=(1, 2, 3))
        return intermediates, self.net.forward_head(final)

    def terms(self, reconstruction: torch.Tensor, target: torch.Tensor, with_classes: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feature distance and (``with_classes``, classifier networks only) the KL of the class probabilities on
        the target to those on the reconstruction; both images in [-1, 1], gradients only through
        ``reconstruction``."""
        if with_classes and not self.has_classes:
            raise ValueError("The class-consistency term needs a classifier as the perceptual network, not "
                             "'imagenet'.")
        ours, ours_logits = self._features(self._prepare(reconstruction))
        with torch.no_grad():
            theirs, theirs_logits = self._features(self._prepare(target))
        distance = reconstruction.new_zeros((), dtype=torch.float32)
        for a, b in zip(ours, theirs):
            distance = distance + F.l1_loss(F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1))
        if not with_classes:
            return distance, None
        kl = F.kl_div(F.log_softmax(ours_logits.float(), -1), F.log_softmax(theirs_logits.float(), -1),
                      log_target=True, reduction="batchmean")
        return distance, kl

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class logits of a classifier network for images in [-1, 1] (gradients flow to ``pixels``)."""
        if not self.has_classes:
            raise ValueError("Class logits need a classifier as the network, not 'imagenet'.")
        return self._features(self._prepare(pixels))[1]

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The feature distance between ``reconstruction`` and ``target`` (both in [-1, 1])."""
        return self.terms(reconstruction, target)[0]


class PatchDiscriminator(torch.nn.Module):
    """PatchGAN discriminator (pix2pix; taming-transformers' NLayerDiscriminator): one real/fake logit per patch."""

    def __init__(self, layers: int = 2, channels: int = 64):
        super().__init__()
        if layers < 1:
            raise ValueError(f"discriminator_layers must be at least 1, got {layers}.")
        modules: list[torch.nn.Module] = [torch.nn.Conv2d(3, channels, 4, 2, 1), torch.nn.LeakyReLU(0.2, True)]
        width = channels
        for index in range(1, layers + 1):
            stride = 2 if index < layers else 1
            wider = channels * min(2 ** index, 8)
            modules += [torch.nn.Conv2d(width, wider, 4, stride, 1, bias=False), torch.nn.BatchNorm2d(wider),
                        torch.nn.LeakyReLU(0.2, True)]
            width = wider
        modules.append(torch.nn.Conv2d(width, 1, 4, 1, 1))
        self.main = torch.nn.Sequential(*modules)
        for module in self.modules():  # DCGAN initialisation, as taming-transformers
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, torch.nn.BatchNorm2d):
                torch.nn.init.normal_(module.weight, 1.0, 0.02)
                torch.nn.init.zeros_(module.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch logits for images in [-1, 1]."""
        return self.main(pixels)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss (real above +1, reconstructions below -1)."""
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def adaptive_adversarial_weight(reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor,
                                last_layer: torch.Tensor) -> torch.Tensor:
    """LDM's balance: |grad of the reconstruction loss| / |grad of the adversarial loss| at ``last_layer``."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gen_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def training_transform(size: int) -> transforms.Compose:
    """PIL image -> (3, size, size) tensor in [-1, 1], resized, centre-cropped and randomly flipped."""
    return transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(size), transforms.RandomHorizontalFlip(),
                               transforms.RandomVerticalFlip(), transforms.ToTensor(),
                               transforms.Normalize([0.5], [0.5])])


def train_vae(vae: AutoencoderKL, images: Sequence[Image.Image], config: VAETrainConfig,
              log: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``vae`` in place on ``images`` (resized to its sample size); returns the loss history."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = vae.device
    to_pixels = training_transform(vae.config.sample_size)
    if config.consistency_weight > 0 and config.perceptual_network == "imagenet":
        raise ValueError("consistency_weight needs a domain classifier as perceptual_network (e.g. "
                         "magic-suite/wbc-classifier), not 'imagenet'.")
    if config.adversarial_weight < 0:
        raise ValueError(f"adversarial_weight must be >= 0, got {config.adversarial_weight}.")
    perceptual = (PerceptualLoss(config.perceptual_network).to(device)
                  if config.perceptual_weight > 0 or config.consistency_weight > 0 else None)
    vae.requires_grad_(False)
    trained = [vae.decoder, vae.post_quant_conv] if config.decoder_only else [vae]
    for module in trained:
        module.requires_grad_(True)
    vae.train()
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    use_amp = autocast_enabled(device, config.mixed_precision)
    discriminator = d_optimizer = None
    if config.adversarial_weight > 0:
        discriminator = PatchDiscriminator(config.discriminator_layers).to(device).train()
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.9))
    last_layer = vae.decoder.conv_out.weight
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
                distance, kl = perceptual.terms(reconstruction, pixels, with_classes=config.consistency_weight > 0)
                loss = loss + config.perceptual_weight * distance
                if kl is not None:
                    loss = loss + config.consistency_weight * kl
            adversarial = discriminator is not None and step >= config.adversarial_start
            if adversarial:
                discriminator.requires_grad_(False)
                generator_loss = -discriminator(reconstruction).float().mean()
                weight = adaptive_adversarial_weight(loss, generator_loss, last_layer)
                loss = loss + config.adversarial_weight * weight * generator_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        record = {"step": step + 1, "loss": loss.item(), "l1": l1.item()}
        if adversarial:
            discriminator.requires_grad_(True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                d_loss = hinge_discriminator_loss(discriminator(pixels), discriminator(reconstruction.detach()))
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            record.update(generator_loss=generator_loss.item(), discriminator_loss=d_loss.item(),
                          adversarial_scale=float(weight))
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
