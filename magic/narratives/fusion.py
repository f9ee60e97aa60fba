"""Image + narrative diagnosis: the image model proposes the options, the narrative classifier decides among them.

**Class mapping.** The image model speaks HAM10000 (7 classes), the narrative model PAD-UFES-20 (6). A HAM class
maps to the PAD class that answers to one of its names in the catalogs (``magic/catalogs/*.yaml``):
actinic_keratosis -> ACK, basal_cell_carcinoma -> BCC, benign_keratosis -> SEK (via its synonym "seborrheic
keratosis"), melanocytic_nevus -> NEV, melanoma -> MEL; dermatofibroma and vascular_lesion have no PAD class.
SCC has no HAM class; HAM10000's akiec class includes intraepidermal carcinoma (SCC in situ), so SCC takes the
actinic_keratosis probability as its image evidence too.

**Rule.** With image probabilities ``p_img`` (HAM) the image score of PAD class ``c`` is ``s_c = p_img(h(c))``,
renormalised over the six PAD classes (``q_c``). The options ``O`` are the PAD classes of the image's top-``k``
HAM classes (at least two: the next best mapped classes are added when needed). The final answer is a weighted
product of experts over the options,

    p(c) ∝ p_txt(c | narrative, O) · q_c ** w,   c in O,

where ``p_txt`` is the narrative classifier's one-pass Chain of Options answer and ``w`` (the image weight) is
fitted on the validation split. Without an image the options are all six classes and ``p = p_txt``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from ..catalog import load_catalog
from .dataset import PAD_LABELS
from .facts import REGIONS, extract_facts

#: Characters of narrative the classifier reads; the rest is cut (at a word boundary) and reported.
MAX_NARRATIVE_CHARS = 2000


def ham_to_pad(ham_labels: list[str]) -> dict[str, list[str]]:
    """HAM class -> PAD classes whose image evidence it is (from the catalogs' ids and synonyms; see module doc)."""
    pad = load_catalog("pad-ufes-20")
    ham = load_catalog("ham10000")
    mapping: dict[str, list[str]] = {}
    for label in ham_labels:
        names = ham.get(label).names() | {name.replace("_", " ") for name in ham.get(label).names()}
        matches = []
        for name in sorted(names):
            try:
                matches.append(pad.get(name).id)
            except KeyError:
                continue
        mapping[label] = sorted(set(matches))
    if "SCC" in PAD_LABELS:
        for targets in mapping.values():
            if "ACK" in targets:
                targets.append("SCC")  # akiec includes intraepidermal carcinoma (SCC in situ)
    return mapping


def image_scores(p_img: np.ndarray, ham_labels: list[str]) -> np.ndarray:
    """q: image evidence over the PAD classes, shape (..., 6), rows summing to 1."""
    mapping = ham_to_pad(ham_labels)
    scores = np.zeros(p_img.shape[:-1] + (len(PAD_LABELS),), dtype=np.float64)
    for h, label in enumerate(ham_labels):
        for target in mapping[label]:
            scores[..., PAD_LABELS.index(target)] += p_img[..., h]
    scores = np.clip(scores, 1e-6, None)
    return scores / scores.sum(-1, keepdims=True)


def options_from_image(p_img: np.ndarray, ham_labels: list[str], top_k: int = 3, minimum: int = 2) -> list[int]:
    """PAD class indices of the image's top-k HAM classes (one image), at least ``minimum`` of them."""
    mapping = ham_to_pad(ham_labels)
    options: list[int] = []
    for rank, h in enumerate(np.argsort(-p_img)):
        new = [PAD_LABELS.index(t) for t in mapping[ham_labels[h]] if PAD_LABELS.index(t) not in options]
        if rank < top_k or len(options) < minimum:
            options += new
    return options


def fuse(p_txt: np.ndarray, q: np.ndarray, options: list[int], weight: float) -> np.ndarray:
    """Weighted product of experts over ``options`` (one case): returns probabilities over the six classes."""
    log = np.full(len(PAD_LABELS), -np.inf)
    for c in options:
        log[c] = np.log(max(float(p_txt[c]), 1e-9)) + weight * np.log(float(q[c]))
    log -= log[options].max()
    p = np.exp(log)
    return p / p.sum()


# ---------------------------------------------------------------------------------------------- free text


@dataclass
class CleanNarrative:
    """The narrative the classifier reads and what was done to the patient's text to get it."""

    text: str
    notes: list[str] = field(default_factory=list)


#: Catalog synonyms that patients use for any spot; they are not treated as naming a diagnosis.
LAY_WORDS = {"mole"}


def _diagnosis_pattern() -> re.Pattern:
    names = set()
    for catalog in ("pad-ufes-20", "ham10000"):
        for condition in load_catalog(catalog).conditions:
            names |= {name.replace("_", " ") for name in condition.names() if len(name) >= 3}
    names -= LAY_WORDS
    names |= {"cancer", "carcinoma", "malignant", "tumour", "tumor", "benign"}
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})s?\b", re.IGNORECASE)


_DIAGNOSIS = None


def clean_narrative(text: str | None, max_chars: int = MAX_NARRATIVE_CHARS) -> CleanNarrative:
    """Normalise the patient's text: drop control characters, collapse whitespace, cut to ``max_chars`` at a word
    boundary, and mask named diagnoses as ``[condition]`` so that naming (or demanding) a diagnosis is not evidence:
    the classifier answers from symptoms, and it is not instructable."""
    global _DIAGNOSIS
    if _DIAGNOSIS is None:
        _DIAGNOSIS = _diagnosis_pattern()
    notes = []
    text = unicodedata.normalize("NFKC", text or "")
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        notes.append(f"The text was {len(text):,} characters; only the first {max_chars:,} were read.")
        text = text[: cut if cut > max_chars // 2 else max_chars].rstrip()
    text, named = _DIAGNOSIS.subn("[condition]", text)
    if named:
        notes.append(f"{named} named diagnosis word(s) were ignored: the answer comes from the image and the "
                     "symptoms, not from names or requests in the text.")
    return CleanNarrative(text, notes)


_FACT_LABELS = {"itch": ("itches", "does not itch"), "grew": ("has grown", "has not grown"),
                "hurt": ("hurts", "does not hurt"), "changed": ("has changed", "has not changed"),
                "bleed": ("bleeds", "does not bleed"), "elevation": ("is raised", "is flat")}


def evidence(text: str) -> dict[str, str]:
    """The facts the narrative states, in words: what the Diagnose tab shows as the narrative evidence."""
    facts = extract_facts(text).known()
    out: dict[str, str] = {}
    for key, value in facts.items():
        if key in _FACT_LABELS:
            out[key] = _FACT_LABELS[key][0 if value else 1]
        elif key == "region":
            out[key] = REGIONS[value][0]
        elif key == "fitzpatrick":
            out[key] = f"type {value}"
        elif key == "diameter_mm":
            out[key] = f"{value:g} mm"
        else:
            out[key] = str(value)
    return out


# ---------------------------------------------------------------------------------------------- the pipeline


@dataclass
class Diagnosis:
    options: list[str]
    evidence: dict[str, str]
    notes: list[str]
    probabilities: dict[str, float]  # final, ranked, over the options
    image_probabilities: dict[str, float]  # the image model's own classes
    narrative_probabilities: dict[str, float]  # over the options
    image_status: str = "none"  # none (no image), ok, unsure, out_of_distribution (then not used)


class DiagnosisPipeline:
    """Image classifier (HAM10000 classes) + narrative classifier (PAD-UFES-20 classes) -> ranked diagnosis."""

    def __init__(self, image_classifier, narrative_classifier, weight: float | None = None, top_k: int | None = None):
        fusion = narrative_classifier.info.get("fusion", {})
        self.image_classifier, self.narrative_classifier = image_classifier, narrative_classifier
        self.weight = float(weight if weight is not None else fusion.get("weight", 1.0))
        self.top_k = int(top_k if top_k is not None else fusion.get("top_k", 3))

    def __call__(self, image=None, narrative: str | None = "") -> Diagnosis:
        clean = clean_narrative(narrative)
        image_probabilities: dict[str, float] = {}
        image_status = "none"
        if image is not None:
            labels = list(self.image_classifier.label_names)
            verdict = self.image_classifier.assess([image], top_k=len(labels))[0]  # one pass: status + every class
            image_status = verdict.status
            if verdict.status == "out_of_distribution":  # not a dermatoscopic image: it is no evidence
                clean.notes.append(f"The image was not used: {verdict.reason}")
                image = None
        if image is not None:
            ranked_image = dict(zip(verdict.prediction.labels, verdict.prediction.probabilities))
            p_img = np.array([ranked_image[label] for label in labels])
            image_probabilities = {label: float(p) for label, p in zip(labels, p_img)}
            options = options_from_image(p_img, labels, self.top_k)
            q = image_scores(p_img, labels)
        else:
            options, q = list(range(len(PAD_LABELS))), np.full(len(PAD_LABELS), 1 / len(PAD_LABELS))
        if re.search(r"\w", clean.text.replace("[condition]", "")):
            p_txt = self.narrative_classifier.predict_proba([clean.text], options=options)[0]
        else:  # nothing to read: the narrative is no evidence (not the model's guess for an empty string)
            p_txt = np.zeros(len(PAD_LABELS))
            p_txt[options] = 1 / len(options)
            clean.notes.append("No description was given: the narrative adds no evidence.")
        final = fuse(p_txt, q, options, self.weight if image is not None else 0.0)
        ranked = sorted(options, key=lambda c: -final[c])
        return Diagnosis(
            options=[PAD_LABELS[c] for c in sorted(options)],
            evidence=evidence(clean.text),
            notes=clean.notes,
            probabilities={PAD_LABELS[c]: float(final[c]) for c in ranked},
            image_probabilities=dict(sorted(image_probabilities.items(), key=lambda item: -item[1])),
            narrative_probabilities={PAD_LABELS[c]: float(p_txt[c]) for c in ranked},
            image_status=image_status,
        )
