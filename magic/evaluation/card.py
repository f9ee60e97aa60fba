"""The embedded evaluator's model card, rendered from model_cards/checklist_evaluator.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..cards import TEMPLATES_DIR, dataset_info
from ..hub import HUB_ORG
from .embedded_model import TEXT_ENCODER


def write_evaluator_card(folder: str | os.PathLike, repo_id: str | None = None, title: str = "",
                         summary: str = "") -> Path:
    """Render ``folder/README.md`` from its config.json and, when present, its metrics.json (agreement results)."""
    folder = Path(folder)
    repo_id = repo_id or f"{HUB_ORG}/{folder.name}"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    training = config.get("magic", {}).get("training", {})
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else []
    datasets = training.get("datasets", [])
    infos = [dataset_info(name) for name in datasets]
    names = [Path(name.rstrip("/")).name for name in datasets]
    licences = sorted({info["hub_license"] for info in infos})
    eval_results = [
        EvalResult(task_type="image-classification", dataset_type=row["dataset"], dataset_name=row["dataset"],
                   dataset_split=row["split"], metric_type=metric, metric_name=metric,
                   metric_value=round(row[metric], 4))
        for row in metrics for metric in ("own_pass_rate", "other_pass_rate")
    ] or None
    card_data = ModelCardData(
        license="cc-by-nc-4.0" if "cc-by-nc-4.0" in licences else (licences[0] if len(licences) == 1 else "other"),
        library_name="magic-suite", pipeline_tag="zero-shot-image-classification",
        tags=["checklist-evaluator", "magic-suite", "medical-imaging", "research-only"],
        datasets=names, model_name=repo_id, eval_results=eval_results,
    )
    non_commercial = any("NC" in info["license"] for info in infos)
    scorer = config["scorer"]
    train_config = training.get("train_config", {})
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATES_DIR / "checklist_evaluator.md"),
        title=title or repo_id,
        summary=summary or "Scores an image against a condition's 5-item expert checklist (0/1 per item).",
        repo_id=repo_id, architecture=config["architecture"], image_size=scorer["image_size"],
        embed_dim=scorer["embed_dim"], text_encoder=TEXT_ENCODER, n_items=len(config["items"]),
        default_threshold=f"{config['default_threshold']:.3f}",
        validity_threshold=f"{config['validity_threshold']:.1f}",
        validity_quantile=train_config.get("validity_quantile", "?"),
        validity_components=train_config.get("validity_components", "?"),
        residual_threshold=f"{config['residual_threshold']:.1f}",
        datasets=[f"`{name}`: {info['description']} Licence: {info['license']}." for name, info in zip(names, infos)],
        catalogs=", ".join(f"{name} v{version}" for name, version in training.get("catalogs", {}).items()),
        train_summary=", ".join(f"{key}={train_config[key]}" for key in ("steps", "batch_size", "lr", "views")
                                if key in train_config) or "not recorded",
        train_seconds=training.get("train_seconds", "?"), feature_seconds=training.get("feature_seconds"),
        license_note="Trained partly on HAM10000 (CC BY-NC 4.0): non-commercial use only." if non_commercial else "",
        metric_rows=[(f"{row['dataset']} [{row['split']}]", row["n_images"], f"{row['own_pass_rate']:.1%}",
                      f"{row['other_pass_rate']:.1%}", f"{row['own_meets3']:.1%}", f"{row['other_meets3']:.1%}",
                      f"{row['own_highest']:.1%}", f"{row.get('invalid_rate', float('nan')):.1%}") for row in metrics],
        eval_command=f"python benchmarks/evaluator.py --evaluator embedded:{repo_id}",
    )
    path = folder / "README.md"
    card.save(path)
    return path
