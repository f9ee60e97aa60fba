"""What a patient can tell about a lesion: the facts of one PAD-UFES-20 row, and reading them back from free text.

``PatientFacts`` holds the patient-reportable fields (age, sex, body region, Fitzpatrick skin type, diameter and
the six yes/no symptoms); ``None`` means unknown (``UNK`` or empty in the metadata, or not said in the text).
``extract_facts`` is a small rule-based reader used to *show* which facts a free-text narrative states (the
"narrative evidence" of the Diagnose tab); the classifier itself reads the words, not these facts.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

#: The six yes/no questions PAD-UFES-20 asked, in the metadata's column names.
SYMPTOMS = ("itch", "grew", "hurt", "changed", "bleed", "elevation")

#: Body regions of PAD-UFES-20 and words a patient uses for them (the first one is the canonical wording).
REGIONS: dict[str, tuple[str, ...]] = {
    "FACE": ("face", "cheek", "forehead", "temple", "chin"),
    "NOSE": ("nose",),
    "EAR": ("ear",),
    "LIP": ("lip",),
    "SCALP": ("scalp", "head"),
    "NECK": ("neck",),
    "CHEST": ("chest", "breastbone"),
    "BACK": ("back", "shoulder blade"),
    "ABDOMEN": ("abdomen", "belly", "stomach"),
    "ARM": ("arm", "upper arm", "shoulder"),
    "FOREARM": ("forearm", "wrist"),
    "HAND": ("hand", "finger"),
    "THIGH": ("thigh", "leg"),
    "FOOT": ("foot", "toe", "heel"),
}

#: Fitzpatrick skin types in a patient's words (how the skin reacts to sun), used by the phrasing and the reader.
FITZPATRICK_WORDS: dict[int, tuple[str, ...]] = {
    1: ("very fair skin that always burns and never tans", "very pale skin that burns every time"),
    2: ("fair skin that burns easily and barely tans", "light skin that usually burns"),
    3: ("medium skin that sometimes burns and tans slowly", "light brown skin that tans gradually"),
    4: ("olive skin that rarely burns and tans easily", "olive skin that tans well"),
    5: ("brown skin that very rarely burns", "brown skin that almost never burns"),
    6: ("dark brown to black skin that never burns", "very dark skin that never burns"),
}


@dataclass(frozen=True)
class PatientFacts:
    """Patient-reportable facts about one lesion; ``None`` is unknown."""

    age: int | None = None
    sex: str | None = None  # "female" | "male"
    region: str | None = None  # a key of REGIONS
    fitzpatrick: int | None = None  # 1..6
    diameter_mm: float | None = None
    itch: bool | None = None
    grew: bool | None = None
    hurt: bool | None = None
    changed: bool | None = None
    bleed: bool | None = None
    elevation: bool | None = None

    def known(self) -> dict[str, object]:
        """The facts that are known, in field order."""
        return {key: value for key, value in asdict(self).items() if value is not None}


def _bool(value: str) -> bool | None:
    return {"true": True, "false": False}.get(str(value).strip().lower())


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN -> None


def facts_from_row(row: dict[str, str]) -> PatientFacts:
    """The facts of one PAD-UFES-20 metadata row (strings as read from metadata.csv)."""
    age = _number(row.get("age", ""))
    fitzpatrick = _number(row.get("fitspatrick", ""))
    diameter = _number(row.get("diameter_1", ""))
    sex = {"FEMALE": "female", "MALE": "male"}.get(str(row.get("gender", "")).strip().upper())
    region = str(row.get("region", "")).strip().upper()
    return PatientFacts(
        age=int(age) if age is not None else None,
        sex=sex,
        region=region if region in REGIONS else None,
        fitzpatrick=int(fitzpatrick) if fitzpatrick is not None and 1 <= fitzpatrick <= 6 else None,
        diameter_mm=diameter if diameter is not None and diameter > 0 else None,
        **{name: _bool(row.get(name, "")) for name in SYMPTOMS},
    )


# ------------------------------------------------------------------------------------------ reading free text

_NEGATION = re.compile(r"\b(no|not|never|nor|nothing|without|doesn'?t|does not|don'?t|do not|isn'?t|is not|"
                       r"hasn'?t|has not|haven'?t|have not|wasn'?t|didn'?t|did not|none|neither)\b")
_UNSURE = re.compile(r"\b(not sure|unsure|don'?t know|do not know|no idea|can'?t tell|cannot tell)\b")
_SYMPTOM_WORDS = {
    "itch": r"itch\w*",
    "grew": r"gr[eo]w\w*|bigger|larger|enlarg\w*|spread\w*|same size",
    "hurt": r"hurt\w*|pain\w*|sore|tender|aches?",
    "changed": r"chang\w*|different|looks the same|evolv\w*",
    "bleed": r"bl[e]?ed\w*|bled|blood\w*",
    "elevation": r"raised|bump\w*|lump\w*|sticks? (?:up|out)|elevated|flat",
}
#: Phrases that state a symptom's absence without a negation word.
_NEGATIVE_PHRASES = {"grew": r"same size|stable in size", "changed": r"looks the same|same as (?:always|ever)",
                     "elevation": r"\bflat\b"}
_AGE = re.compile(r"\b(\d{1,3})[- ]?(?:years?|yrs?|y/?o)\b(?:[- ]old)?|\b(?:i'?m|i am|aged?|my age is)\s+(\d{1,3})\b")
_FITZPATRICK_TYPE = re.compile(r"fitzpatrick(?: skin)?(?: type)?\s*(vi|iv|v|i{1,3}|[1-6])\b")
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_CLAUSE = re.compile(r"[.;!?\n]|,\s*(?:but|and)\b|\bbut\b")


def _clauses(text: str) -> list[str]:
    return [clause.strip() for clause in _CLAUSE.split(text) if clause and clause.strip()]


def extract_facts(text: str) -> PatientFacts:
    """Read the facts a free-text narrative states (first mention wins; negations within the clause)."""
    text = (text or "").lower().replace("’", "'")
    found: dict[str, object] = {}
    for clause in _clauses(text):
        unsure = _UNSURE.search(clause) is not None
        for name in SYMPTOMS:
            if name in found:
                continue
            match = re.search(rf"\b(?:{_SYMPTOM_WORDS[name]})", clause)
            if not match or unsure:
                continue
            negative_phrase = name in _NEGATIVE_PHRASES and re.search(_NEGATIVE_PHRASES[name], clause)
            negated = _NEGATION.search(clause[:match.start()]) is not None
            found[name] = not (negated or negative_phrase)
            if name == "elevation" and negative_phrase and negated:  # "it isn't flat"
                found[name] = True
    if (match := _AGE.search(text)) is not None:
        age = int(match.group(1) or match.group(2))
        if 0 < age < 120:
            found["age"] = age
    if re.search(r"\b(woman|female|girl|lady|mother|grandmother)\b", text):
        found["sex"] = "female"
    elif re.search(r"\b(man|male|boy|father|grandfather)\b", text):
        found["sex"] = "male"
    region_hits = []
    for region, words in REGIONS.items():
        for word in words:
            if (hit := re.search(rf"\b{word}s?\b", text)) is not None:
                region_hits.append((hit.start(), -len(word), region))
    if region_hits:
        found["region"] = min(region_hits)[2]
    if (match := _FITZPATRICK_TYPE.search(text)) is not None:
        value = match.group(1)
        found["fitzpatrick"] = int(value) if value.isdigit() else _ROMAN[value]
    else:
        for skin_type, phrases in FITZPATRICK_WORDS.items():
            if any(phrase in text for phrase in phrases):
                found["fitzpatrick"] = skin_type
                break
    if (match := re.search(r"\b(\d+(?:\.\d+)?)\s*(mm|millimet\w*|cm|centimet\w*)\b", text)) is not None:
        size = float(match.group(1)) * (10 if match.group(2).startswith("c") else 1)
        if 0 < size < 500:
            found["diameter_mm"] = size
    return PatientFacts(**found)
