"""Model and dataset cards rendered from the templates in model_cards/ with typed Hub metadata."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .classifiers.evaluate import EvaluationResult
from .classifiers.model import ImageClassifier

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "model_cards"

#: What the project knows about the datasets it trains on: description and licence for cards.
KNOWN_DATASETS: dict[str, dict[str, str]] = {
    "pbc": {
        "description": "PBC peripheral blood cell images (Acevedo et al. 2020, Data in Brief 30:105474), "
                       "8 classes, 128x128, fixed stratified splits (seed 0).",
        "license": "CC BY 4.0",
        "hub_license": "cc-by-4.0",
    },
    "ham10000": {
        "description": "HAM10000 dermatoscopic images (Tschandl et al. 2018), one image per lesion, 7 classes.",
        "license": "CC BY-NC 4.0 (non-commercial)",
        "hub_license": "cc-by-nc-4.0",
    },
}


def dataset_info(dataset: str) -> dict[str, str]:
    """Card facts for a dataset path or id (matched by its last path component)."""
    key = Path(str(dataset).rstrip("/")).name.lower().replace("-64", "")
    return KNOWN_DATASETS.get(key, {"description": f"Dataset `{dataset}`.", "license": "see the dataset's card",
                                    "hub_license": "other"})


def classifier_card(
    classifier: ImageClassifier,
    repo_id: str,
    dataset: str,
    metrics: EvaluationResult | None,
    eval_split: str = "test",
    title: str | None = None,
    summary: str = "",
) -> ModelCard:
    """A model card for a classifier with its metrics on ``eval_split`` as Hub eval results."""
    info = dataset_info(dataset)
    dataset_name = Path(str(dataset).rstrip("/")).name
    eval_results = None
    if metrics is not None:
        eval_results = [
            EvalResult(task_type="image-classification", dataset_type=dataset_name, dataset_name=dataset_name,
                       dataset_split=eval_split, metric_type=metric, metric_value=round(value, 4))
            for metric, value in (("accuracy", metrics.accuracy), ("f1", metrics.macro_f1))
        ]
    card_data = ModelCardData(
        license=info["hub_license"],
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "medical-imaging", "magic-suite", "research-only"],
        datasets=[dataset_name],
        model_name=repo_id,
        eval_results=eval_results,
    )
    train_config = classifier.info.get("train_config", {})
    train_summary = ", ".join(f"{key}={train_config[key]}" for key in
                              ("epochs", "max_steps", "batch_size", "lr", "balance", "image_size")
                              if train_config.get(key) not in (None, 0))
    size = classifier.preprocess.input_size[-1]
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES_DIR / "image_classifier.md"),
        title=title or repo_id,
        summary=summary,
        repo_id=repo_id,
        architecture=classifier.architecture,
        image_size=size,
        num_classes=len(classifier.label_names),
        label_list=", ".join(classifier.label_names),
        pretrained_start=classifier.info.get("pretrained") or "random initialisation",
        temperature=f"{classifier.temperature:.3f}",
        ood_threshold=f"{float(classifier.ood.semantic.threshold):.2f}" if classifier.ood is not None else "",
        residual_threshold=f"{float(classifier.ood.semantic.residual_threshold):.2f}" if classifier.ood is not None
        else "",
        style_check=classifier.ood is not None and classifier.ood.style is not None,
        dataset_description=info["description"],
        dataset_license=info["license"],
        license_note="Non-commercial use only, as the training images' licence requires." if "NC" in info["license"]
        else "",
        train_summary=train_summary or "not recorded",
        eval_split=eval_split,
        n_eval=metrics.n if metrics else 0,
        accuracy=f"{metrics.accuracy:.2%}" if metrics else "not evaluated",
        macro_f1=f"{metrics.macro_f1:.4f}" if metrics else "not evaluated",
        recall_rows=[(name, f"{value:.2%}") for name, value in metrics.per_class_recall.items()] if metrics else [],
        eval_command=f"python -m magic eval-classifier --model {repo_id} --data {dataset} --split {eval_split} --json",
    )


def write_classifier_card(folder: str | os.PathLike, **kwargs) -> Path:
    """Render ``classifier_card(**kwargs)`` into ``folder/README.md``."""
    path = Path(folder) / "README.md"
    classifier_card(**kwargs).save(path)
    return path


def model_license(model_id: str) -> str:
    """The Hub licence in the card of a model folder or id (an adapter inherits its base's); 'other' when the card
    is missing or says none."""
    from huggingface_hub import metadata_load

    from .hub import resolve_model

    try:
        return (metadata_load(resolve_model(model_id) / "README.md") or {}).get("license", "other")
    except Exception:  # noqa: BLE001 (a base without a readable card: say so rather than guess)
        return "other"
