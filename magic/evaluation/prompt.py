"""The checklist prompt and the parsing of answers, after MAGIC (arXiv 2506.12323) Appendix C.

The model is asked to evaluate the image against the numbered checklist and to return a list of 0/1 values in
checklist order, e.g. ``[1, 0, 1, 0, 0]`` (all zeros when the image does not show a valid lesion / cell), then one
short reason per item. Anything else is a malformed answer: it is retried by the caller, never turned into zeros.
"""

from __future__ import annotations

import re

from .verdict import Checklist, MalformedAnswerError

PROMPT_TEMPLATE = """You are an expert reviewer of {modality} images.
Evaluate the image against the following checklist for {condition}. For each item, answer 1 if the image meets \
it and 0 if it does not.

Checklist:
{items}

If the image does not show a valid {subject} (for example a blank, noisy, cartoon or unrelated picture), answer 0 \
for every item.
Return a list of {n} values (0 or 1) in checklist order, for example {example}, on the first line. Then give one \
short reason per item, one per line, numbered like the checklist ("1. ...")."""

_LIST = re.compile(r"\[([^\[\]]*)\]")
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):]\s*(.+?)\s*$")
_EXAMPLE = [1, 0, 1, 0, 0, 1, 0, 1, 0, 0]


def subject_of(modality: str) -> str:
    text = modality.lower()
    if "blood" in text or "cell" in text or "smear" in text:
        return "blood cell"
    if "derm" in text or "skin" in text or "clinical" in text:
        return "skin lesion"
    return "medical image"


def build_prompt(checklist: Checklist) -> str:
    """The user message sent with the image."""
    n = len(checklist.items)
    items = "\n".join(f"{index}. {text}" for index, text in enumerate(checklist.items, start=1))
    example = "[" + ", ".join(str(value) for value in _EXAMPLE[:n]) + "]"
    return PROMPT_TEMPLATE.format(modality=checklist.modality, condition=checklist.condition_name, items=items,
                                  subject=subject_of(checklist.modality), n=n, example=example)


def parse_answer(text: str, n_items: int) -> tuple[list[int], list[str]]:
    """A model's answer -> (n 0/1 scores, n reasons). Raises MalformedAnswerError when no valid list is found.

    The first bracketed list of exactly ``n_items`` values, each 0 or 1 (``true``/``false`` and ``"1"`` are
    accepted), is the answer; numbered lines after it are the reasons (missing reasons read "no reason given").
    """
    if not isinstance(text, str) or not text.strip():
        raise MalformedAnswerError("The answer is empty.", answer=text or "")
    seen = []
    for match in _LIST.finditer(text):
        values = [value.strip().strip("'\"").lower() for value in match.group(1).split(",") if value.strip()]
        seen.append(len(values))
        mapped = [{"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}.get(value) for value in values]
        if len(mapped) == n_items and all(value is not None for value in mapped):
            return mapped, _reasons(text[match.end():], n_items)
    detail = f"lists of {seen} values" if seen else "no [ ... ] list"
    raise MalformedAnswerError(f"Expected a list of {n_items} values 0/1 such as [1, 0, 1, 0, 0]; found {detail}.",
                               answer=text)


def _reasons(rest: str, n_items: int) -> list[str]:
    reasons = {}
    for line in rest.splitlines():
        match = _NUMBERED.match(line)
        if match and 1 <= int(match.group(1)) <= n_items and int(match.group(1)) not in reasons:
            reasons[int(match.group(1))] = match.group(2)
    return [reasons.get(index, "no reason given") for index in range(1, n_items + 1)]


def format_answer(scores: list[int], reasons: list[str]) -> str:
    """The answer in the format ``parse_answer`` reads (what the project's own server replies)."""
    lines = ["[" + ", ".join(str(int(score)) for score in scores) + "]"]
    lines += [f"{index}. {reason}" for index, reason in enumerate(reasons, start=1)]
    return "\n".join(lines)


def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    """Recover (condition name, checklist items) from a prompt written by ``build_prompt``.

    Items are the numbered lines after a line ``Checklist:`` up to the first blank line. Raises ValueError when
    the prompt has no such checklist.
    """
    condition = ""
    found = re.search(r"checklist for (.+?)\. For each item", prompt)
    if found:
        condition = found.group(1).strip()
    lines = prompt.splitlines()
    try:
        start = next(index for index, line in enumerate(lines) if line.strip().lower() == "checklist:")
    except StopIteration as error:
        raise ValueError("The prompt has no 'Checklist:' line followed by numbered items.") from error
    items = []
    for line in lines[start + 1:]:
        if not line.strip():
            if items:
                break
            continue
        match = _NUMBERED.match(line)
        if not match:
            break
        items.append(match.group(2))
    if not items:
        raise ValueError("The prompt's checklist has no numbered items ('1. ...').")
    return condition, items
