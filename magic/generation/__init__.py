"""Image generation: SD-architecture pipelines of both sizes, text-to-image and image-to-image."""

from .components import TinySDConfig, build_pipeline, load_text_encoder, minilm_folder
from .generator import GenerationError, GenerationSettings, Generator, GeneratorInfo, default_device_and_dtype

__all__ = [
    "GenerationError",
    "GenerationSettings",
    "Generator",
    "GeneratorInfo",
    "TinySDConfig",
    "build_pipeline",
    "default_device_and_dtype",
    "load_text_encoder",
    "minilm_folder",
]
