"""Build the PAD-UFES-20 narrative dataset: first-person texts, split by patient, Hub-shaped with a card."""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .facts import facts_from_row
from .phrasing import render_narrative

#: PAD-UFES-20 diagnoses in the order of the dataset's ClassLabel (ids of magic/catalogs/pad-ufes-20.yaml).
PAD_LABELS = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
SPLITS = ("train", "validation", "test")


@dataclass
class NarrativeDatasetConfig:
    """How the narratives are built and split."""

    seed: int = field(default=0, metadata={"help": "Seeds the patient split and every phrasing choice."})
    train_variants: int = field(default=3, metadata={"help": "Narratives per lesion in the train split."})
    eval_variants: int = field(default=1, metadata={"help": "Narratives per lesion in validation and test."})
    validation_fraction: float = field(default=0.15, metadata={"help": "Share of patients in validation."})
    test_fraction: float = field(default=0.15, metadata={"help": "Share of patients in test."})
    drop: float = field(default=0.15, metadata={"help": "Probability that a known fact is left out of a text."})


def read_metadata(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"patient_id", "lesion_id", "diagnostic"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path} is not PAD-UFES-20 metadata: missing columns {sorted(missing)}.")
    return rows


def split_patients(rows: list[dict[str, str]], config: NarrativeDatasetConfig) -> dict[str, str]:
    """patient_id -> split. Patients are grouped by their first lesion's diagnosis and each group is split by the
    fractions, so every split holds every diagnosis and no patient is in two splits."""
    first: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: (r["patient_id"], int(r["lesion_id"]))):
        first.setdefault(row["patient_id"], row["diagnostic"])
    groups: dict[str, list[str]] = defaultdict(list)
    for patient, diagnosis in sorted(first.items()):
        groups[diagnosis].append(patient)
    rng = np.random.default_rng(config.seed)
    assignment = {}
    for diagnosis in sorted(groups):
        patients = list(rng.permutation(groups[diagnosis]))
        n_test = max(1, round(len(patients) * config.test_fraction))
        n_val = max(1, round(len(patients) * config.validation_fraction))
        for index, patient in enumerate(patients):
            assignment[str(patient)] = "test" if index < n_test else "validation" if index < n_test + n_val \
                else "train"
    return assignment


def build_narratives(rows: list[dict[str, str]], config: NarrativeDatasetConfig) -> dict[str, list[dict]]:
    """Rows of each split: text, label, patient_id, lesion_id, variant and the facts the text states (JSON)."""
    assignment = split_patients(rows, config)
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    for row in sorted(rows, key=lambda r: (int(r["lesion_id"]), r.get("img_id", ""))):
        if row["diagnostic"] not in PAD_LABELS or row["lesion_id"] in seen:
            continue  # PAD-UFES-20 has one row per image; a lesion with several images is told once
        seen.add(row["lesion_id"])
        split = assignment[row["patient_id"]]
        facts = facts_from_row(row)
        for variant in range(config.train_variants if split == "train" else config.eval_variants):
            rng = np.random.default_rng([config.seed, int(row["lesion_id"]), variant])
            text, stated = render_narrative(facts, rng, drop=config.drop)
            out[split].append({"text": text, "label": PAD_LABELS.index(row["diagnostic"]),
                               "patient_id": row["patient_id"], "lesion_id": int(row["lesion_id"]),
                               "variant": variant, "facts": json.dumps(stated.known())})
    return out


def features() -> datasets.Features:
    return datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(PAD_LABELS)),
                              "patient_id": datasets.Value("string"), "lesion_id": datasets.Value("int64"),
                              "variant": datasets.Value("int32"), "facts": datasets.Value("string")})


def build_narrative_dataset(metadata: str | os.PathLike, output: str | os.PathLike,
                            config: NarrativeDatasetConfig | None = None) -> dict[str, int]:
    """Write ``output/data/{split}-00000-of-00001.parquet`` and ``output/README.md``; return rows per split."""
    config = config or NarrativeDatasetConfig()
    splits = build_narratives(read_metadata(metadata), config)
    output = Path(output)
    (output / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        columns = {name: [row[name] for row in rows] for name in features()}
        datasets.Dataset.from_dict(columns, features=features()).to_parquet(
            output / "data" / f"{split}-00000-of-00001.parquet")
    counts = {split: len(rows) for split, rows in splits.items()}
    write_narrative_card(output, splits, config)
    return counts


def write_narrative_card(output: Path, splits: dict[str, list[dict]], config: NarrativeDatasetConfig) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    template = (Path(__file__).resolve().parents[2] / "model_cards" / "narrative_dataset.md").read_text()
    table = "\n".join(
        f"| {name} | " + " | ".join(str(sum(row["label"] == index for row in splits[split])) for split in SPLITS) + " |"
        for index, name in enumerate(PAD_LABELS))
    patients = {split: len({row["patient_id"] for row in rows}) for split, rows in splits.items()}
    examples = "\n".join(f"> {row['text']}" + "\n>" for row in splits["train"][:3]).rstrip(">\n")
    data = DatasetCardData(license="cc-by-4.0", language=["en"], task_categories=["text-classification"],
                           tags=["medical", "dermatology", "synthetic-text", "magic-suite"],
                           source_datasets=["PAD-UFES-20"], pretty_name=output.name)
    content = template.format(card_data=data.to_yaml(), title=output.name, config=json.dumps(asdict(config)),
                              table=table, examples=examples,
                              patients=", ".join(f"{split} {count}" for split, count in patients.items()),
                              rows=", ".join(f"{split} {len(rows)}" for split, rows in splits.items()))
    path = output / "README.md"
    DatasetCard(content).save(path)
    return path


def load_narratives(name_or_path: str | os.PathLike) -> datasets.DatasetDict:
    """A narrative dataset folder (or Hub id) as train / validation / test."""
    return datasets.load_dataset(str(name_or_path))
