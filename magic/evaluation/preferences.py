"""Preference pairs from checklist scores, with MAGIC's rules, in a documented JSON format.

Rules (MAGIC, arXiv 2506.12323), for two images of the same prompt with checklist scores ``a`` and ``b`` (0-5):

- ``max(a, b) <= 2``: both lose (neither is good enough to imitate);
- ``min(a, b) == 5`` or ``a == b > 2``: both win;
- otherwise the higher score wins and the lower loses.

File format (``magic-preferences``, version 1), JSON; also what an expert writes by hand::

    {
      "format": "magic-preferences",
      "version": 1,
      "max_score": 5,
      "pairs": [
        {
          "group": "basophil/0",                   # pairs compared under the same prompt / condition
          "condition_id": "basophil",
          "prompt": "a microscopy image of a basophil white blood cell",
          "a": {"image": "images/0001.png", "score": 4},
          "b": {"image": "images/0002.png", "score": 1},
          "win_a": true,                          # true: a is a winner (imitate it); false: a loser
          "win_b": false,
          "rule": "higher wins",                  # which rule decided (or "expert")
          "judge": "embedded:checklist-evaluator-..."   # the evaluator backend id, or "expert:NAME"
        }
      ]
    }

``score`` may be omitted when ``win_a``/``win_b`` are given by hand (rule ``"expert"``); with scores and no wins, the
wins are derived from the rules on load.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = "magic-preferences"
FORMAT_VERSION = 1

BOTH_LOSE, BOTH_WIN, HIGHER_WINS, EXPERT = "both lose", "both win", "higher wins", "expert"


def preference(score_a: int, score_b: int, max_score: int = 5) -> tuple[bool, bool, str]:
    """(a wins, b wins, rule) for two checklist scores, with the paper's rules."""
    for score in (score_a, score_b):
        if not 0 <= score <= max_score or int(score) != score:
            raise ValueError(f"Scores must be integers in 0..{max_score}, got {score_a} and {score_b}.")
    low, high = min(score_a, score_b), max(score_a, score_b)
    if high <= 2:
        return False, False, BOTH_LOSE
    if low == max_score or (score_a == score_b and score_a > 2):
        return True, True, BOTH_WIN
    return score_a > score_b, score_b > score_a, HIGHER_WINS


@dataclass
class Side:
    image: str
    score: int | None = None


@dataclass
class PreferencePair:
    a: Side
    b: Side
    win_a: bool
    win_b: bool
    rule: str
    group: str = ""
    condition_id: str = ""
    prompt: str = ""
    judge: str = ""

    def to_dict(self) -> dict:
        values = asdict(self)
        for side in ("a", "b"):
            if values[side]["score"] is None:
                del values[side]["score"]
        return values


def make_pairs(records: list[dict], judge: str = "", max_score: int = 5) -> list[PreferencePair]:
    """Pair scored images that share a ``group`` (consecutive in order: 1st with 2nd, 3rd with 4th...).

    Each record needs ``image`` and ``score``; ``group``, ``condition_id`` and ``prompt`` are carried over. A group
    with an odd count leaves its last image unpaired.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[str(record.get("group", record.get("prompt", "")))].append(record)
    pairs = []
    for group, members in groups.items():
        for first, second in zip(members[0::2], members[1::2]):
            win_a, win_b, rule = preference(int(first["score"]), int(second["score"]), max_score)
            pairs.append(PreferencePair(a=Side(str(first["image"]), int(first["score"])),
                                        b=Side(str(second["image"]), int(second["score"])), win_a=win_a, win_b=win_b,
                                        rule=rule, group=group, condition_id=str(first.get("condition_id", "")),
                                        prompt=str(first.get("prompt", "")), judge=judge))
    return pairs


def save_preferences(pairs: list[PreferencePair], path: str | os.PathLike, max_score: int = 5) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT, "version": FORMAT_VERSION, "max_score": max_score,
                "pairs": [pair.to_dict() for pair in pairs]}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def load_preferences(path: str | os.PathLike) -> list[PreferencePair]:
    """Read and validate a preferences file; pairs with scores but no wins get them from the rules."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (missing \"format\": \"{FORMAT}\").")
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: version {document.get('version')!r} is not supported (expected {FORMAT_VERSION}).")
    max_score = int(document.get("max_score", 5))
    pairs = []
    for index, raw in enumerate(document.get("pairs", [])):
        where = f"{path}: pairs[{index}]"
        try:
            a, b = Side(**raw["a"]), Side(**raw["b"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"{where}: needs 'a' and 'b' objects with 'image' (and optionally 'score').") from error
        if "win_a" in raw and "win_b" in raw:
            win_a, win_b = bool(raw["win_a"]), bool(raw["win_b"])
            rule = raw.get("rule", EXPERT)
        elif a.score is not None and b.score is not None:
            win_a, win_b, rule = preference(a.score, b.score, max_score)
        else:
            raise ValueError(f"{where}: give win_a and win_b, or a score for both images.")
        pairs.append(PreferencePair(a=a, b=b, win_a=win_a, win_b=win_b, rule=rule, group=str(raw.get("group", "")),
                                    condition_id=str(raw.get("condition_id", "")), prompt=str(raw.get("prompt", "")),
                                    judge=str(raw.get("judge", ""))))
    return pairs
