"""Chain of Options (CoO): the exact formulation this project trains and runs.

The classifier is one sequence-classification model with one logit per diagnosis (``z_c``, c in the catalog's six
PAD-UFES-20 ids). Its input is the patient's narrative followed by a question; only the narrative is ever
truncated (the question is the second segment of a text pair, ``truncation="only_first"``).

**Training examples.** For every narrative with diagnosis ``y`` an *option set* ``O`` is drawn: ``y`` plus
``k - 1`` other diagnoses chosen at random, ``k`` drawn from {2, 3, 4, 6}, shuffled (at run time the options
come from the image model's top-k; without an image they are all six). Then

1. *intermediate steps* (CoO only), one per option ``o`` in ``O`` (or, to save compute, ``steps`` of them:
   the diagnosis and ``steps - 1`` wrong options, so the yes/no answers stay balanced): the question
   ``"Option: <name of o>. Is this option consistent with what the patient says?"``, trained as a yes/no
   decision on the option's own logit: ``BCE(sigmoid(z_o), [o == y])``;
2. the *final step*: the question ``"Options: <names of O>. Which of these options is it?"``, trained with
   cross-entropy over the logits of the options only (the others are masked to -inf):
   ``CE(softmax(z_O), y)``.

**Plain fine-tuning** (the ablation) trains the same model on the final step only. **Inference** is one pass of
the final step: ``p(c | narrative, O) = softmax over O of z_c`` (zero outside ``O``). The intermediate steps
teach the head what each option's logit means on its own, which is what the final step compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import PAD_LABELS

#: How the options are named in the questions (the catalog's display names, lower case, with the id).
OPTION_NAMES = {
    "ACK": "actinic keratosis", "BCC": "basal cell carcinoma", "MEL": "melanoma", "NEV": "nevus (mole)",
    "SCC": "squamous cell carcinoma", "SEK": "seborrheic keratosis",
}
OPTION_SET_SIZES = (2, 3, 4, 6)


@dataclass(frozen=True)
class Example:
    """One training example: narrative + question; ``kind`` is ``final`` (target = class index among
    ``options``) or ``step`` (``options`` has one entry, target 1 when it is the diagnosis, else 0)."""

    narrative: str
    question: str
    kind: str
    options: tuple[int, ...]
    target: int


def final_question(options: tuple[int, ...] | list[int]) -> str:
    names = "; ".join(OPTION_NAMES[PAD_LABELS[index]] for index in options)
    return f"Options: {names}. Which of these options is it?"


def step_question(option: int) -> str:
    return f"Option: {OPTION_NAMES[PAD_LABELS[option]]}. Is this option consistent with what the patient says?"


def draw_options(label: int, rng: np.random.Generator, num_classes: int = len(PAD_LABELS)) -> tuple[int, ...]:
    k = int(rng.choice(OPTION_SET_SIZES))
    others = [c for c in range(num_classes) if c != label]
    chosen = [label, *rng.choice(others, size=min(k, num_classes) - 1, replace=False).tolist()]
    return tuple(int(c) for c in rng.permutation(chosen))


def make_examples(narrative: str, label: int, rng: np.random.Generator, method: str = "coo",
                  steps: int = 0) -> list[Example]:
    """The examples one narrative contributes: CoO = the final step + one step per option (``steps`` > 0: the
    diagnosis and ``steps - 1`` other options only); plain = the final step only."""
    if method not in ("coo", "plain"):
        raise ValueError(f"method must be 'coo' or 'plain', got {method!r}.")
    options = draw_options(label, rng)
    examples = [Example(narrative, final_question(options), "final", options, options.index(label))]
    if method == "coo":
        chosen = list(options)
        if steps:
            others = [o for o in options if o != label]
            chosen = [label, *rng.permutation(others)[:steps - 1].tolist()]
        examples += [Example(narrative, step_question(o), "step", (int(o),), int(o == label)) for o in chosen]
    return examples
