"""Expert labels and the evaluator's agreement with them (Cohen's kappa per checklist item)."""

import json

import pytest
from sklearn.metrics import cohen_kappa_score

from magic.evaluation import Checklist, load_evaluator
from magic.evaluation.experts import (
    ExpertLabel,
    agreement_from_pairs,
    expert_agreement,
    load_expert_labels,
    save_expert_labels,
)
from scripts.make_examples import _cell
from tests.test_cli import run_cli


def test_kappa_per_item_matches_sklearn_and_handles_constant_items():
    pairs = [{"expert": [1, 0, 1], "evaluator": [1, 0, 0]}, {"expert": [0, 0, 1], "evaluator": [0, 0, 1]},
             {"expert": [1, 0, 0], "evaluator": [0, 0, 0]}, {"expert": [0, 0, 1], "evaluator": [0, 0, 1]}]
    result = agreement_from_pairs(pairs, "test@1")
    assert result.kappa[0] == pytest.approx(cohen_kappa_score([1, 0, 1, 0], [1, 0, 0, 0]))
    assert result.kappa[1] is None and result.agreement[1] == 1.0  # both always 0: kappa undefined, not 1 or 0
    assert result.agreement == [0.75, 1.0, 0.75] and result.n_images == 4
    with pytest.raises(ValueError, match="same number of checklist items"):
        agreement_from_pairs([{"expert": [1, 0], "evaluator": [1]}])


def test_labels_round_trip_and_malformed_lines_are_named(tmp_path):
    labels = [ExpertLabel("a.png", "pbc", "basophil", [1, 0, 1, 1, 0], rater="dr-a", checklist_version="pbc@1.0.0")]
    path = save_expert_labels(labels, tmp_path / "labels.jsonl")
    assert load_expert_labels(path) == labels
    path.write_text(path.read_text() + json.dumps({"image": "b.png", "catalog": "pbc", "condition": "ig",
                                                   "scores": [1, 2, 0, 0, 0]}) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        load_expert_labels(path)


def test_embedded_evaluator_against_expert_labels_from_the_cli(tmp_path):
    labels = []
    for seed, kind in enumerate(["lymphocyte", "neutrophil", "basophil", "eosinophil"]):
        _cell(kind, seed).save(tmp_path / f"{kind}.png")
        labels.append(ExpertLabel(f"{kind}.png", "pbc", kind, [1, 1, 0, 1, seed % 2], rater="dr-a",
                                  checklist_version="pbc@0.9"))
    path = save_expert_labels(labels, tmp_path / "labels.jsonl")
    result = expert_agreement(load_evaluator("embedded", cache=None), labels, tmp_path)
    evaluator = load_evaluator("embedded", cache=None)
    expected = [evaluator.evaluate(str(tmp_path / label.image), Checklist.from_catalog("pbc", label.condition)).scores
                for label in labels]
    assert [pair["evaluator"] for pair in result.pairs] == expected and result.version_mismatches == 4
    done = run_cli("expert-agreement", "--labels", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["agreement"] == result.agreement
