"""HAM10000's age, sex and body site as first-person narratives, one per image of a HAM10000 image dataset.

HAM10000 ships its clinical metadata as ``HAM10000_metadata.csv`` (columns ``lesion_id, image_id, dx, dx_type, age,
sex, localization``; Tschandl et al. 2018, CC BY-NC 4.0). Joined on the ISIC image id with an image dataset whose
``source_file`` names the image (as in ``../shared/data/ham10000``), every image gets a narrative of what its own
patient could say: age, sex and where the lesion is. Because the text and the image belong to the same lesion,
these are *real* image + narrative pairs, unlike pairing a PAD-UFES-20 narrative with a HAM image of the same
diagnosis. HAM10000 recorded no symptoms, so the narratives state no itch, growth, pain, change, bleeding or
elevation.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .dataset import SPLITS
from .facts import PatientFacts
from .phrasing import render_narrative

#: Columns of HAM10000_metadata.csv this module reads.
HAM_COLUMNS = ("image_id", "dx", "age", "sex", "localization")
#: HAM10000 ``dx`` codes -> the class names of the HAM10000 image dataset (magic/catalogs/ham10000.yaml).
DX_NAMES = {"akiec": "actinic_keratosis", "bcc": "basal_cell_carcinoma", "bkl": "benign_keratosis",
            "df": "dermatofibroma", "mel": "melanoma", "nv": "melanocytic_nevus", "vasc": "vascular_lesion"}
#: HAM10000 ``localization`` -> PAD-UFES-20 region (facts.REGIONS); None where no single region fits
#: (trunk, acral, genital and unknown are left out of the text).
SITE_REGIONS = {"scalp": "SCALP", "ear": "EAR", "face": "FACE", "neck": "NECK", "chest": "CHEST", "back": "BACK",
                "abdomen": "ABDOMEN", "upper extremity": "ARM", "lower extremity": "THIGH", "hand": "HAND",
                "foot": "FOOT", "trunk": None, "acral": None, "genital": None, "unknown": None}
_ISIC_ID = re.compile(r"ISIC_\d+")


@dataclass
class HamNarrativeConfig:
    """How the HAM10000 narratives are written."""

    seed: int = field(default=0, metadata={"help": "Seeds every phrasing choice."})
    drop: float = field(default=0.0, metadata={
        "help": "Probability that a known fact is left out of a text (0: every recorded fact is said)."})
    say_unknown: float = field(default=0.0, metadata={
        "help": "Probability of saying an unrecorded yes/no fact as \"I'm not sure ...\" (HAM10000 recorded none)."})


def read_ham_metadata(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """HAM10000_metadata.csv as image_id -> row; raises ValueError naming the missing columns."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = set(HAM_COLUMNS) - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path} is not HAM10000_metadata.csv: missing columns {sorted(missing)} (expected "
                         f"{', '.join(HAM_COLUMNS)}).")
    unknown = sorted({row["dx"] for row in rows} - set(DX_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown dx codes {unknown}; HAM10000 uses {sorted(DX_NAMES)}.")
    return {row["image_id"]: row for row in rows}


def ham_facts(row: dict[str, str]) -> PatientFacts:
    """The patient-reportable facts of one HAM10000 metadata row: age, sex and body region."""
    try:
        age = float(row.get("age") or "nan")
    except ValueError:
        age = float("nan")
    sex = str(row.get("sex", "")).strip().lower()
    return PatientFacts(age=int(age) if age == age and 0 < age < 120 else None,
                        sex=sex if sex in ("female", "male") else None,
                        region=SITE_REGIONS.get(str(row.get("localization", "")).strip().lower()))


def isic_id(source_file: str) -> str:
    """The ISIC image id in a file name (``melanoma/ISIC_0024310.jpg`` -> ``ISIC_0024310``); '' when none."""
    match = _ISIC_ID.search(str(source_file))
    return match.group(0) if match else ""


def build_ham_narratives(metadata: dict[str, dict[str, str]], images: datasets.DatasetDict,
                         config: HamNarrativeConfig) -> tuple[dict[str, list[dict]], list[str]]:
    """Per split of ``images``: one narrative per image, in the image dataset's row order (``image_index``), and
    the image ids that have no metadata row. Raises if the metadata's diagnosis contradicts the image's label."""
    out: dict[str, list[dict]] = {}
    unmatched: list[str] = []
    for split in [name for name in SPLITS if name in images]:
        part = images[split]
        names = part.features["label"].names
        rows = []
        for index, (source, label) in enumerate(zip(part["source_file"], part["label"])):
            image_id = isic_id(source)
            meta = metadata.get(image_id)
            if meta is None:
                unmatched.append(image_id or str(source))
                continue
            if DX_NAMES[meta["dx"]] != names[label]:
                raise ValueError(f"{image_id}: the metadata says {meta['dx']!r} ({DX_NAMES[meta['dx']]}) but the "
                                 f"{split} split labels it {names[label]!r}; are these the same HAM10000 images?")
            rng = np.random.default_rng([config.seed, int(image_id.removeprefix("ISIC_")), 0])
            text, stated = render_narrative(ham_facts(meta), rng, drop=config.drop, say_unknown=config.say_unknown)
            rows.append({"text": text, "label": int(label), "image_index": index, "image_id": image_id,
                         "lesion_id": meta.get("lesion_id", ""), "facts": json.dumps(stated.known())})
        out[split] = rows
    return out, unmatched


def ham_features(label_names: list[str]) -> datasets.Features:
    return datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=label_names),
                              "image_index": datasets.Value("int64"), "image_id": datasets.Value("string"),
                              "lesion_id": datasets.Value("string"), "facts": datasets.Value("string")})


def build_ham_narrative_dataset(metadata: str | os.PathLike, images: str | os.PathLike, output: str | os.PathLike,
                                config: HamNarrativeConfig | None = None,
                                max_unmatched: float = 0.01) -> dict[str, int]:
    """Write ``output/data/{split}-00000-of-00001.parquet`` (the image dataset's splits) and a card; return rows per
    split. More than ``max_unmatched`` of the images without a metadata row is an error (wrong files)."""
    from ..data.datasets import load_image_dataset

    config = config or HamNarrativeConfig()
    image_data = load_image_dataset(images)
    if "source_file" not in image_data[next(iter(image_data))].column_names:
        raise ValueError(f"{images} has no source_file column to join on; it must name each image's ISIC id.")
    splits, unmatched = build_ham_narratives(read_ham_metadata(metadata), image_data, config)
    total = sum(len(part) for part in image_data.values())
    if len(unmatched) > max_unmatched * total:
        raise ValueError(f"{len(unmatched)} of {total} images of {images} have no row in {metadata} (first: "
                         f"{unmatched[:3]}); give the HAM10000_metadata.csv of these images.")
    names = image_data[next(iter(image_data))].features["label"].names
    output = Path(output)
    (output / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        columns = {name: [row[name] for row in rows] for name in ham_features(names)}
        datasets.Dataset.from_dict(columns, features=ham_features(names)).to_parquet(
            output / "data" / f"{split}-00000-of-00001.parquet")
    _write_card(output, splits, names, config, str(images), len(unmatched))
    return {split: len(rows) for split, rows in splits.items()}


def _write_card(output: Path, splits: dict[str, list[dict]], names: list[str], config: HamNarrativeConfig,
                images: str, unmatched: int) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    template = (Path(__file__).resolve().parents[2] / "model_cards" / "ham_narrative_dataset.md").read_text()
    table = "\n".join(f"| {name} | " + " | ".join(str(sum(row["label"] == index for row in splits[split]))
                                                   for split in splits) + " |" for index, name in enumerate(names))
    data = DatasetCardData(license="cc-by-nc-4.0", language=["en"], task_categories=["text-classification"],
                           tags=["medical", "dermatology", "synthetic-text", "magic-suite"],
                           source_datasets=["HAM10000"], pretty_name=output.name)
    examples = "\n".join(f"> {row['text']}" + "\n>" for row in next(iter(splits.values()))[:3]).rstrip(">\n")
    content = template.format(card_data=data.to_yaml(), title=output.name, images=images, unmatched=unmatched,
                              config=json.dumps(asdict(config)), header=" | ".join(splits),
                              rule="|".join("---" for _ in splits), table=table, examples=examples)
    path = output / "README.md"
    DatasetCard(content).save(path)
    return path
