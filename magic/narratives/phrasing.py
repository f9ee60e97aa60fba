"""Turn ``PatientFacts`` into a first-person narrative, with varied wording, negations and left-out facts.

Every fact has several phrasings for yes and for no; the order of the symptom sentences is shuffled; each known
fact is left out with probability ``drop``, and an unknown yes/no fact is sometimes said as "I'm not sure ...".
The randomness comes only from the ``rng`` the caller passes, so a seed fixes the text.
"""

from __future__ import annotations

import numpy as np

from .facts import FITZPATRICK_WORDS, REGIONS, SYMPTOMS, PatientFacts

_SYMPTOM_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "itch": {
        "yes": ("It itches.", "It's itchy.", "The spot itches a lot.", "I keep scratching it because it itches."),
        "no": ("It doesn't itch.", "There's no itching.", "It isn't itchy at all."),
        "unknown": ("I'm not sure whether it itches.",),
    },
    "grew": {
        "yes": ("It has grown.", "It's getting bigger.", "It got larger over the last months.",
                "I think it has been growing."),
        "no": ("It hasn't grown.", "It has stayed the same size.", "It is not getting bigger."),
        "unknown": ("I don't know if it has grown.",),
    },
    "hurt": {
        "yes": ("It hurts.", "It's painful.", "It's sore when I touch it.", "Sometimes I feel pain there."),
        "no": ("It doesn't hurt.", "There's no pain.", "It's not painful."),
        "unknown": ("I can't tell whether it hurts.",),
    },
    "changed": {
        "yes": ("It has changed recently.", "It looks different than it used to.", "Its appearance has changed."),
        "no": ("It hasn't changed.", "It looks the same as always.", "Nothing about it has changed."),
        "unknown": ("I'm not sure if it has changed.",),
    },
    "bleed": {
        "yes": ("It bleeds sometimes.", "It has bled.", "It bleeds easily when I scratch it.",
                "I've noticed blood on it."),
        "no": ("It has never bled.", "It doesn't bleed.", "There's no bleeding."),
        "unknown": ("I don't know if it has bled.",),
    },
    "elevation": {
        "yes": ("It's raised above the skin.", "It's a bump I can feel.", "It sticks up from the skin."),
        "no": ("It's flat.", "It's flat against the skin.", "It isn't raised."),
        "unknown": ("I'm not sure whether it is raised.",),
    },
}

_OPENINGS = ("I have a spot on my {where}.", "There is a lesion on my {where}.", "I noticed a mark on my {where}.",
             "Something on my {where} worries me.", "I have a skin lesion on my {where}.")
_OPENINGS_NO_REGION = ("I have a spot on my skin.", "There is a lesion I'd like checked.",
                       "I noticed a mark on my skin.")
_AGE_SEX = ("I'm a {age}-year-old {sex}.", "I am {age} years old and a {sex}.", "{Sex}, {age} years old.")
_AGE = ("I'm {age} years old.", "I am {age}.", "My age is {age}.")
_SEX = {"female": ("woman", "female"), "male": ("man", "male")}
_SKIN = ("I have {words}.", "My skin is {words}.")
_DIAMETER = ("It is about {mm} mm across.", "It measures roughly {cm} cm.", "It's around {mm} millimetres wide.")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def render_narrative(facts: PatientFacts, rng: np.random.Generator, drop: float = 0.15,
                     say_unknown: float = 0.3) -> tuple[str, PatientFacts]:
    """A first-person narrative of ``facts`` and the facts it actually states (after leaving some out)."""
    keep = {key: value for key, value in facts.known().items() if rng.random() >= drop}
    sentences: list[str] = []
    age, sex = keep.get("age"), keep.get("sex")
    if age is not None and sex is not None:
        word = _pick(rng, _SEX[sex])
        sentences.append(_pick(rng, _AGE_SEX).format(age=age, sex=word, Sex=word.capitalize()))
    elif age is not None:
        sentences.append(_pick(rng, _AGE).format(age=age))
    elif sex is not None:
        sentences.append(f"I'm a {_pick(rng, _SEX[sex])}.")
    if "fitzpatrick" in keep:
        sentences.append(_pick(rng, _SKIN).format(words=_pick(rng, FITZPATRICK_WORDS[keep["fitzpatrick"]])))
    region = keep.get("region")
    opening = (_pick(rng, _OPENINGS).format(where=_pick(rng, REGIONS[region])) if region
               else _pick(rng, _OPENINGS_NO_REGION))
    sentences.insert(int(rng.integers(len(sentences) + 1)), opening)
    body: list[str] = []
    for name in SYMPTOMS:
        value = keep.get(name)
        if value is None:
            if getattr(facts, name) is None and rng.random() < say_unknown:
                body.append(_pick(rng, _SYMPTOM_PHRASES[name]["unknown"]))
            continue
        body.append(_pick(rng, _SYMPTOM_PHRASES[name]["yes" if value else "no"]))
    if "diameter_mm" in keep:
        mm = keep["diameter_mm"]
        body.append(_pick(rng, _DIAMETER).format(mm=f"{mm:g}", cm=f"{mm / 10:g}"))
    order = rng.permutation(len(body))
    text = " ".join(sentences + [body[i] for i in order])
    return text, PatientFacts(**keep)
