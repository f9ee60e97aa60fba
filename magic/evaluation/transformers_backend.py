"""Backend (b): a local transformers vision-language model by Hub id (Qwen2.5-VL, MedGemma, SmolVLM...).

Loaded with ``AutoProcessor`` + ``AutoModelForImageTextToText`` (safetensors only, never remote code), asked with
the checklist prompt through the processor's chat template, decoded greedily, parsed like any chat answer.
"""

from __future__ import annotations

import torch
from PIL import Image

from .base import ChatEvaluator
from .cache import VerdictCache


class TransformersEvaluator(ChatEvaluator):
    """``TransformersEvaluator("Qwen/Qwen2.5-VL-3B-Instruct")``; ``model``/``processor`` may be given ready-made."""

    name = "transformers"

    def __init__(self, model_id: str, device: str | None = None, dtype: str = "auto", max_new_tokens: int = 200,
                 revision: str | None = None, malformed_retries: int = 2, cache: VerdictCache | None = None,
                 model=None, processor=None):
        super().__init__(cache=cache, malformed_retries=malformed_retries)
        self.model_id = model_id
        self.version = f"{model_id}@{revision or 'main'}"
        self.max_new_tokens = max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if processor is None or model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            processor = processor or AutoProcessor.from_pretrained(model_id, revision=revision,
                                                                   trust_remote_code=False)
            model = model or AutoModelForImageTextToText.from_pretrained(
                model_id, revision=revision, trust_remote_code=False, use_safetensors=True,
                dtype=_dtype(dtype, self.device))
        self.processor = processor
        self.model = model.to(self.device).eval()

    @property
    def backend_id(self) -> str:
        return f"{self.name}:{self.version}"

    def messages(self, prompt: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]

    def inputs(self, image: Image.Image, prompt: str) -> dict:
        """The processor's tensors for one image and the prompt, through the model's chat template."""
        text = self.processor.apply_chat_template(self.messages(prompt), add_generation_prompt=True, tokenize=False)
        batch = self.processor(text=[text], images=[image.convert("RGB")], return_tensors="pt")
        return {key: value.to(self.device) if hasattr(value, "to") else value for key, value in batch.items()}

    @torch.inference_mode()
    def complete(self, image: Image.Image, prompt: str, attempt: int = 0) -> str:
        inputs = self.inputs(image, prompt)
        sampling = {"do_sample": False} if attempt == 0 else {"do_sample": True, "temperature": 0.7, "top_p": 0.95}
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (1, T_new)
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]


def _dtype(name: str, device: str):
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
