"""Evaluate a classifier on a labelled split: accuracy, macro-F1, per-class recall, confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import datasets
import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from tqdm.auto import tqdm

from ..data.datasets import TorchImageDataset, class_names
from .calibration import nll
from .model import ImageClassifier


@dataclass
class EvaluationResult:
    """Metrics of one classifier on one split."""

    accuracy: float
    macro_f1: float
    per_class_recall: dict[str, float]
    confusion_matrix: list[list[int]]
    label_names: list[str]
    n: int
    nll: float

    def to_dict(self) -> dict:
        return asdict(self)

    def plot_confusion_matrix(self, title: str = "Confusion matrix"):
        """A matplotlib Figure of the row-normalised confusion matrix with counts."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = np.asarray(self.confusion_matrix)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        size = 1.0 + 0.7 * len(self.label_names)
        figure, axis = plt.subplots(figsize=(size + 1.5, size))
        image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        axis.set_xticks(range(len(self.label_names)), self.label_names, rotation=45, ha="right")
        axis.set_yticks(range(len(self.label_names)), self.label_names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        for (row, col), count in np.ndenumerate(counts):
            axis.text(col, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if rates[row, col] > 0.5 else "black")
        axis.set_title(f"{title} (accuracy {self.accuracy:.1%}, n={self.n})")
        figure.colorbar(image, ax=axis, fraction=0.046)
        figure.tight_layout()
        return figure


@torch.inference_mode()
def collect_outputs(
    classifier: ImageClassifier, dataset: datasets.Dataset, batch_size: int = 128, num_workers: int = 0,
    progress: bool = True, style: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Logits (N, C), pooled features (N, D) and labels (N,) of a whole split, in dataset order; with ``style``,
    also the early-stage statistics (N, S) of ``ImageClassifier.style_features``."""
    classifier.eval()
    loader = torch.utils.data.DataLoader(TorchImageDataset(dataset, classifier._transform), batch_size=batch_size,
                                         num_workers=num_workers)
    all_logits, all_features, all_labels, all_style = [], [], [], []
    for pixels, labels in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        pixels = pixels.to(classifier.device)
        logits, features = classifier.logits_and_features(pixels)
        all_logits.append(logits.float().cpu())
        all_features.append(features.float().cpu())
        all_labels.append(labels)
        if style:
            all_style.append(classifier.style_features(pixels).float().cpu())
    outputs = (torch.cat(all_logits), torch.cat(all_features), torch.cat(all_labels))
    return (*outputs, torch.cat(all_style)) if style else outputs


def collect_logits(
    classifier: ImageClassifier, dataset: datasets.Dataset, batch_size: int = 128, num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) of a whole split, in dataset order."""
    logits, _, labels = collect_outputs(classifier, dataset, batch_size, num_workers, progress)
    return logits, labels


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, label_names: list[str],
                        temperature: float = 1.0) -> EvaluationResult:
    """Compute every metric from already-collected logits."""
    predicted = logits.argmax(dim=-1).numpy()
    truth = labels.numpy()
    indices = list(range(len(label_names)))
    recall = recall_score(truth, predicted, labels=indices, average=None, zero_division=0)
    return EvaluationResult(
        accuracy=float((predicted == truth).mean()) if len(truth) else float("nan"),
        macro_f1=float(f1_score(truth, predicted, labels=indices, average="macro", zero_division=0)),
        per_class_recall={name: float(value) for name, value in zip(label_names, recall)},
        confusion_matrix=confusion_matrix(truth, predicted, labels=indices).tolist(),
        label_names=list(label_names),
        n=int(len(truth)),
        nll=nll(logits, labels, temperature),
    )


def evaluate_classifier(classifier: ImageClassifier, dataset: datasets.Dataset, batch_size: int = 128,
                        num_workers: int = 0, progress: bool = True) -> EvaluationResult:
    """Evaluate on a labelled split whose class names match the classifier's."""
    names = class_names(dataset)
    if names != classifier.label_names:
        raise ValueError(f"The dataset's classes {names} differ from the classifier's {classifier.label_names}.")
    logits, labels = collect_logits(classifier, dataset, batch_size, num_workers, progress)
    return metrics_from_logits(logits, labels, names, classifier.temperature)
