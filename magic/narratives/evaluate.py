"""Accuracy and macro-F1 of class-probability rows against labels, and the narrative classifier's card."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, recall_score


def scores(labels, predictions, label_names: list[str]) -> dict:
    """accuracy, macro-F1 over the classes present in ``labels`` or ``predictions``, per-class recall, n."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    present = sorted(set(labels.tolist()) | set(predictions.tolist()))
    recall = recall_score(labels, predictions, labels=present, average=None, zero_division=0)
    return {"accuracy": float((labels == predictions).mean()) if len(labels) else float("nan"),
            "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
            "n": int(len(labels)),
            "per_class_recall": {label_names[c]: round(float(r), 4) for c, r in zip(present, recall)}}


def evaluate_narrative_classifier(classifier, dataset) -> dict:
    """Narrative-only: the final step with all six options, on a split with ``text`` and ``label``."""
    probabilities = classifier.predict_proba(list(dataset["text"]))
    return scores(dataset["label"], probabilities.argmax(1), classifier.label_names)


def write_narrative_card(folder: str | os.PathLike, classifier, repo_id: str, dataset: str,
                         metrics: dict | None) -> Path:
    from huggingface_hub import ModelCard, ModelCardData

    template = (Path(__file__).resolve().parents[2] / "model_cards" / "narrative_classifier.md").read_text()
    base = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    train = classifier.info.get("train", {})
    data = ModelCardData(license="cc-by-4.0", library_name="peft", pipeline_tag="text-classification",
                         base_model=base[classifier.config["base"]], tags=["medical", "dermatology", "magic-suite",
                                                                           "chain-of-options", "lora"])
    metric_text = "not evaluated"
    if metrics:
        metric_text = (f"accuracy **{metrics['accuracy']:.1%}**, macro-F1 **{metrics['macro_f1']:.3f}** "
                       f"(n = {metrics['n']}); recall per class: `{json.dumps(metrics['per_class_recall'])}`")
    content = template.format(
        card_data=data.to_yaml(), title=repo_id, repo_id=repo_id, base=classifier.config["base"],
        base_id=base[classifier.config["base"]], dataset=dataset, method=train.get("method", "?"),
        train=json.dumps(train), seconds=classifier.info.get("train_seconds", "?"),
        narratives=classifier.info.get("train_narratives", "?"), metrics=metric_text,
        labels=", ".join(classifier.label_names),
        fusion=(f"image weight w = {classifier.info['fusion']['weight']}, options = the image's top-"
                f"{classifier.info['fusion']['top_k']}" if "fusion" in classifier.info else "not fitted"))
    path = Path(folder) / "README.md"
    ModelCard(content).save(path)
    return path
