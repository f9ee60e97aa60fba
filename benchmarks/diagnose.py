"""Benchmark image + narrative diagnosis: narrative-only, image-only, combined, and the narrative ablations.

    bash benchmarks/train_narratives.sh /tmp/magic        # trains the ablation models (CPU, ~1 h shared)
    python benchmarks/diagnose.py --models /tmp/magic/models --fusion-model /tmp/magic/models/minilm-coo

What each row measures (all on fixed test splits; nothing is chosen by hand):

* narrative-only: PAD-UFES-20 narrative test split (split by patient), all six options, the model's one-pass
  answer. Rows for every trained model (read from its metrics.json, written by train-narrative-classifier on the
  same split) and for cheap references computed here: majority class, logistic regression on the structured facts
  each text states, and logistic regression on frozen MiniLM sentence embeddings (all training narratives).
* image-only (HAM test): the skin classifier on HAM10000's test split, restricted to the five classes that have a
  PAD-UFES-20 counterpart (ACK, BCC, MEL, NEV, SEK): images of those classes, argmax over those classes.
* SIMULATED pairs: PAD-UFES-20 has no images here and HAM10000 has no narratives, so there are no real
  image + narrative pairs. Each PAD test narrative of an overlapping class is paired with a HAM test image of the
  same diagnosis drawn at random (seed 0); SCC narratives are left out. On these pairs: image-only, narrative-only,
  the narrative restricted to the image's options (w = 0) and the fused answer (w fitted on simulated validation
  pairs built the same way). These numbers show how the rule combines two independent sources of evidence; they
  are not a clinical result.
* REAL pairs (with ``--ham-narratives``, a dataset from ``python -m magic build-ham-narratives``): each HAM10000 test
  image of an overlapping class with a narrative of its own patient's age, sex and body site (HAM10000 recorded no
  symptoms), so text and image belong to the same lesion; the same rows as for the simulated pairs, with the image
  weight fitted on the real validation pairs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from magic.narratives.dataset import PAD_LABELS, build_narrative_dataset, load_narratives  # noqa: E402
from magic.narratives.evaluate import scores  # noqa: E402
from magic.narratives.fusion import fuse, ham_to_pad, image_scores, options_from_image  # noqa: E402

OVERLAP = ("ACK", "BCC", "MEL", "NEV", "SEK")
WEIGHTS = tuple(np.round(np.arange(0, 3.01, 0.25), 2))


def row(name: str, result: dict, **extra) -> dict:
    return {"row": name, "accuracy": round(result["accuracy"], 4), "macro_f1": round(result["macro_f1"], 4),
            "n": result["n"], **extra}


def fact_features(facts_json: list[str]) -> np.ndarray:
    keys = ["age", "fitzpatrick", "diameter_mm"]
    symptoms = ["itch", "grew", "hurt", "changed", "bleed", "elevation"]
    from magic.narratives.facts import REGIONS

    out = []
    for text in facts_json:
        facts = json.loads(text)
        vector = []
        for key in keys:
            vector += [float(facts[key]) / 100 if key in facts else 0.0, float(key in facts)]
        for key in symptoms:
            vector += [float(facts.get(key) is True), float(facts.get(key) is False)]
        vector += [float(facts.get("region") == region) for region in REGIONS]
        vector += [float(facts.get("sex") == "female"), float(facts.get("sex") == "male")]
        out.append(vector)
    return np.asarray(out)


def minilm_embedder(max_length: int = 128):
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (the sentence-transformers recipe)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from magic.generation.components import minilm_folder

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    model = AutoModel.from_pretrained(minilm_folder(), use_safetensors=True).eval()

    @torch.no_grad()
    def embed(texts) -> np.ndarray:
        out = []
        texts = list(texts)
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start:start + 64], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"][..., None].float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out)

    return embed


def references(data) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    rows = []
    train, test = data["train"], data["test"]
    majority = int(np.bincount(train["label"]).argmax())
    rows.append(row("narrative-only: majority class (reference)", scores(test["label"], [majority] * len(test),
                                                                         list(PAD_LABELS))))
    model = LogisticRegression(max_iter=2000, C=1.0).fit(fact_features(train["facts"]), train["label"])
    rows.append(row("narrative-only: logistic regression on the stated facts (reference, all train)",
                    scores(test["label"], model.predict(fact_features(test["facts"])), list(PAD_LABELS))))
    start = time.time()
    embed = minilm_embedder()
    model = LogisticRegression(max_iter=2000, C=10.0).fit(embed(train["text"]), train["label"])
    rows.append(row("narrative-only: frozen MiniLM embeddings + logistic regression (all train)",
                    scores(test["label"], model.predict(embed(test["text"])), list(PAD_LABELS)),
                    seconds=round(time.time() - start, 1)))
    return rows


def trained_rows(models: Path) -> list[dict]:
    rows = []
    for metrics_path in sorted(models.glob("*/metrics.json")):
        config = json.loads((metrics_path.parent / "config.json").read_text())
        metrics = json.loads(metrics_path.read_text())
        train = config["magic"].get("train", {})
        rows.append(row(f"narrative-only: {metrics_path.parent.name} ({config['base']} + LoRA, {train.get('method')})",
                        metrics, train_narratives=config["magic"].get("train_narratives"),
                        train_seconds=config["magic"].get("train_seconds"), source=str(metrics_path)))
    return rows


def image_probabilities(classifier, dataset) -> np.ndarray:
    return classifier.predict_proba([item["image"].convert("RGB") for item in dataset])


def pairs(narratives, ham_labels: np.ndarray, ham_names: list[str], seed: int) -> list[tuple[int, int]]:
    """(narrative index, HAM image index) for each narrative of an overlapping class; same diagnosis."""
    mapping = ham_to_pad(ham_names)
    by_pad = {pad: [] for pad in OVERLAP}
    for index, label in enumerate(ham_labels):
        targets = [t for t in mapping[ham_names[label]] if t in OVERLAP]
        if targets:
            by_pad[targets[0]].append(index)
    rng = np.random.default_rng(seed)
    return [(i, int(rng.choice(by_pad[PAD_LABELS[label]]))) for i, label in enumerate(narratives["label"])
            if PAD_LABELS[label] in OVERLAP]


def paired_predictions(narrative_model, narratives, p_img: np.ndarray, ham_names, chosen, top_k):
    """Per pair: image-only class (argmax over the overlapping HAM classes, mapped to PAD), narrative-only
    probabilities, narrative-with-options probabilities, q, options."""
    texts = list(narratives["text"])
    mapping = ham_to_pad(ham_names)
    overlap = [h for h, name in enumerate(ham_names) if any(t in OVERLAP for t in mapping[name])]
    p_all = narrative_model.predict_proba([texts[i] for i, _ in chosen])
    out = []
    for (i, h), p_free in zip(chosen, p_all):
        options = options_from_image(p_img[h], ham_names, top_k)
        p_opt = narrative_model.predict_proba([texts[i]], options=options)[0]
        best = overlap[int(np.argmax(p_img[h][overlap]))]
        image_only = PAD_LABELS.index([t for t in mapping[ham_names[best]] if t in OVERLAP][0])
        out.append({"label": narratives["label"][i], "image": image_only, "free": p_free, "opt": p_opt,
                    "q": image_scores(p_img[h], ham_names), "options": options})
    return out


def real_pairs(ham_narratives, ham_names: list[str]) -> tuple[dict, list[tuple[int, int]]]:
    """HAM narratives of the overlapping classes as (texts + PAD labels, [(narrative index, image index)])."""
    mapping = ham_to_pad(ham_names)
    names = ham_narratives.features["label"].names
    texts, labels, chosen = [], [], []
    for item in ham_narratives:
        targets = [t for t in mapping[names[item["label"]]] if t in OVERLAP]
        if targets:
            chosen.append((len(texts), int(item["image_index"])))
            texts.append(item["text"])
            labels.append(PAD_LABELS.index(targets[0]))
    return {"text": texts, "label": labels}, chosen


def pair_rows(kind: str, cases: dict, model_name: str, top_k: int) -> tuple[list[dict], float, dict]:
    """image-only, narrative-only, options-only and fused rows on the test cases; w fitted on validation."""
    fits = {w: fused_scores(cases["validation"], w) for w in WEIGHTS}
    weight = max(WEIGHTS, key=lambda w: (fits[w]["accuracy"], fits[w]["macro_f1"]))
    test = cases["test"]
    labels = [c["label"] for c in test]
    rows = [
        row(f"{kind} pairs: image-only", scores(labels, [c["image"] for c in test], list(PAD_LABELS))),
        row(f"{kind} pairs: narrative-only ({model_name}, 6 options)",
            scores(labels, [int(np.argmax(c["free"])) for c in test], list(PAD_LABELS))),
        row(f"{kind} pairs: narrative with the image's top-{top_k} options, w = 0", fused_scores(test, 0.0)),
        row(f"{kind} pairs: combined (product of experts, w = {weight} fitted on validation pairs)",
            fused_scores(test, weight), weight=float(weight)),
        row(f"{kind} pairs: combined, w = 1", fused_scores(test, 1.0), weight=1.0),
    ]
    return rows, float(weight), {str(w): round(v["accuracy"], 4) for w, v in fits.items()}


def fused_scores(cases, weight: float) -> dict:
    predictions = [int(np.argmax(fuse(c["opt"], c["q"], c["options"], weight))) for c in cases]
    return scores([c["label"] for c in cases], predictions, list(PAD_LABELS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", default="../shared/data/pad-ufes-20/metadata.csv")
    parser.add_argument("--narratives", default="", help="Narrative dataset folder (default: built in a temp dir).")
    parser.add_argument("--ham", default="../shared/data/ham10000")
    parser.add_argument("--image-model", default="magic-suite/skin-classifier")
    parser.add_argument("--models", default="/tmp/magic/models", help="Folder of trained narrative classifiers.")
    parser.add_argument("--fusion-model", default="magic-suite/narrative-classifier")
    parser.add_argument("--ham-narratives", default="",
                        help="HAM10000 narratives (build-ham-narratives) of the --ham images: adds REAL pairs rows.")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-references", action="store_true", help="Skip the MiniLM-embedding reference rows.")
    parser.add_argument("--output", default="benchmarks/results/diagnose.json")
    parser.add_argument("--refresh-trained", action="store_true",
                        help="Only re-read the trained models' metrics.json into an existing --output file.")
    parser.add_argument("--limit", type=int, default=0, help="Quick check: only this many items per split (0: all).")
    parser.add_argument("--save-weight", action="store_true",
                        help="Write the fitted image weight and top-k into the fusion model's config.json.")
    args = parser.parse_args()

    from magic.classifiers import load_classifier
    from magic.data import load_image_dataset
    from magic.narratives import load_narrative_classifier

    if args.refresh_trained:
        refresh(Path(args.output), Path(args.models))
        return
    start = time.time()
    folder = args.narratives or tempfile.mkdtemp(prefix="narratives-")
    if not args.narratives:
        build_narrative_dataset(args.metadata, folder)
    data = load_narratives(folder)
    if args.limit:
        data = {split: part.select(range(min(args.limit, len(part)))) for split, part in data.items()}
    rows = [] if args.no_references else references(data)
    rows += trained_rows(Path(args.models))

    image_model = load_classifier(args.image_model)
    ham_names = list(image_model.label_names)
    ham = {split: load_image_dataset(args.ham, split=split) for split in ("validation", "test")}
    kept = {split: np.arange(len(part)) for split, part in ham.items()}  # image rows used, in the split's order
    if args.limit:
        kept = {split: np.sort(np.random.default_rng(0).permutation(len(part))[:args.limit])
                for split, part in ham.items()}
        ham = {split: part.select(kept[split]) for split, part in ham.items()}
    p_img = {split: image_probabilities(image_model, ham[split]) for split in ham}
    ham_labels = {split: np.asarray(ham[split]["label"]) for split in ham}
    overlap_ham = [h for h, name in enumerate(ham_names) if any(t in OVERLAP for t in ham_to_pad(ham_names)[name])]
    keep = np.isin(ham_labels["test"], overlap_ham)
    restricted = p_img["test"][keep][:, overlap_ham].argmax(1)
    rows.append(row("image-only: skin classifier on HAM10000 test, 5 overlapping classes",
                    scores(ham_labels["test"][keep], np.asarray(overlap_ham)[restricted], ham_names)))

    narrative_model = load_narrative_classifier(args.fusion_model)
    cases = {}
    for split in ("validation", "test"):
        chosen = pairs(data[split], ham_labels[split], ham_names, args.seed)
        cases[split] = paired_predictions(narrative_model, data[split], p_img[split], ham_names, chosen, args.top_k)
    name = Path(str(args.fusion_model)).name
    simulated, weight, fit = pair_rows("SIMULATED", cases, name, args.top_k)
    rows += simulated
    real_fit = None
    if args.ham_narratives:
        ham_text = load_narratives(args.ham_narratives)
        real = {}
        for split in ("validation", "test"):
            texts, chosen = real_pairs(ham_text[split], ham_names)
            position = {int(image): index for index, image in enumerate(kept[split])}
            chosen = [(i, position[h]) for i, h in chosen if h in position]
            real[split] = paired_predictions(narrative_model, texts, p_img[split], ham_names, chosen, args.top_k)
        real_rows, _, real_fit = pair_rows("REAL", real, name, args.top_k)
        rows += real_rows
    result = {"rows": rows, "fusion_model": str(args.fusion_model), "image_model": args.image_model,
              "top_k": args.top_k, "fitted_weight": float(weight), "validation_fit": fit,
              "real_pairs_validation_fit": real_fit, "ham_narratives": args.ham_narratives or None,
              "machine": f"{platform.machine()} CPU, {platform.python_version()}",
              "seconds": round(time.time() - start, 1)}
    if args.save_weight:
        from magic.hub import resolve_model

        config_path = resolve_model(args.fusion_model) / "config.json"
        config = json.loads(config_path.read_text())
        config["magic"]["fusion"] = {"weight": float(weight), "top_k": args.top_k,
                                     "fitted_on": "simulated validation pairs (PAD-UFES-20 narratives + HAM10000 "
                                                  "images of the same diagnosis), benchmarks/diagnose.py"}
        config_path.write_text(json.dumps(config, indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))
    print_table(rows)
    print(f"wrote {args.output} in {result['seconds']} s")


def print_table(rows: list[dict]) -> None:
    print("| row | accuracy | macro-F1 | n |\n|---|---|---|---|")
    for item in rows:
        print(f"| {item['row']} | {item['accuracy']:.1%} | {item['macro_f1']:.3f} | {item['n']} |")


def refresh(output: Path, models: Path) -> None:
    """Replace the trained-model rows of an existing result file (models trained after the full run)."""
    result = json.loads(output.read_text())
    kept = [item for item in result["rows"] if "source" not in item]
    position = max((i for i, item in enumerate(kept) if item["row"].startswith("narrative-only")), default=-1) + 1
    result["rows"] = kept[:position] + trained_rows(models) + kept[position:]
    output.write_text(json.dumps(result, indent=1))
    print_table(result["rows"])


if __name__ == "__main__":
    main()
