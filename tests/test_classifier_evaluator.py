"""A classifier as an evaluator: its graded items follow the classifier's own probability, verdicts are cached per
weights and levels, and specs and conditions it cannot judge are refused with advice."""

from __future__ import annotations

import pytest

from magic.classifiers import load_classifier
from magic.evaluation import Checklist, VerdictCache, load_evaluator, make_pairs
from magic.evaluation.classifier_backend import DEFAULT_LEVELS, ClassifierEvaluator
from magic.hub import WEIGHTS_DIR
from tests.test_evaluation import _cell

WBC = WEIGHTS_DIR / "wbc-classifier"


@pytest.fixture(scope="module")
def evaluator():
    return load_evaluator(f"classifier:{WBC}")


@pytest.fixture(scope="module")
def cells():
    return [_cell(kind, seed) for seed in range(3) for kind in ("lymphocyte", "neutrophil", "eosinophil")]


def test_items_follow_the_classifiers_probability_of_the_requested_condition(evaluator, cells):
    classifier = load_classifier(WBC)
    probabilities = classifier.predict_proba(cells)
    for condition in ("lymphocyte", "neutrophil", "basophil"):
        verdicts = evaluator.evaluate_batch(cells, f"pbc:{condition}")
        column = probabilities[:, classifier.label_names.index(condition)]
        assert [v.score for v in verdicts] == [sum(p >= level for level in DEFAULT_LEVELS) for p in column]
        for verdict, p in zip(verdicts, column):
            assert verdict.backend == "classifier" and verdict.condition_id == condition
            assert len(verdict.items) == len(verdict.scores) == len(verdict.rationales) == 5
            assert verdict.rationales[0].startswith(f"p({condition}) = {p:.3f}")
            assert all("probability of at least" in item for item in verdict.items)
    # one image's scores over all conditions: only one condition can pass the levels above 0.5
    scores = [evaluator.evaluate(cells[0], f"pbc:{c}").scores for c in classifier.label_names]
    assert sum(s[2] for s in scores) <= 1  # p >= 0.6


def test_scores_make_the_papers_preference_pairs(evaluator, cells):
    verdicts = evaluator.evaluate_batch(cells[:2], "pbc:lymphocyte")
    records = [{"image": f"{i}.png", "score": v.score, "group": "lymphocyte"} for i, v in enumerate(verdicts)]
    (pair,) = make_pairs(records, judge=evaluator.backend_id)
    assert pair.judge.startswith("classifier:wbc-classifier-")
    if max(v.score for v in verdicts) <= 2:
        assert not pair.win_a and not pair.win_b


def test_cache_is_keyed_by_weights_and_levels(tmp_path, cells):
    cache = VerdictCache(tmp_path / "verdicts.sqlite")
    first = load_evaluator(f"classifier:{WBC}", cache=cache)
    verdict = first.evaluate(cells[0], "pbc:lymphocyte")
    again = load_evaluator(f"classifier:{WBC}", cache=cache).evaluate(cells[0].copy(), "pbc:lymphocyte")
    assert again.cached and again.scores == verdict.scores
    coarse = load_evaluator(f"classifier:{WBC}?levels=0.5,0.9", cache=cache)
    assert coarse.backend_id != first.backend_id
    graded = coarse.evaluate(cells[0], "pbc:lymphocyte")
    assert not graded.cached and len(graded.scores) == 2


def test_bad_specs_and_unknown_conditions_are_refused(evaluator, cells):
    with pytest.raises(ValueError, match="Name the classifier"):
        load_evaluator("classifier")
    with pytest.raises(ValueError, match="comma-separated"):
        load_evaluator(f"classifier:{WBC}?levels=high")
    with pytest.raises(ValueError, match="increasing"):
        load_evaluator(f"classifier:{WBC}?levels=0.9,0.5")
    with pytest.raises(ValueError, match="levels= and device= only"):
        load_evaluator(f"classifier:{WBC}?temperature=2")
    with pytest.raises(ValueError, match="not the condition 'melanoma'"):
        evaluator.evaluate(cells[0], Checklist.from_catalog("ham10000", "melanoma"))


def test_evaluate_command_accepts_a_classifier_spec(tmp_path, capsys, cells):
    import json

    from magic.cli import main

    path = tmp_path / "cell.png"
    cells[0].save(path)
    assert main(["evaluate", "--evaluator", f"classifier:{WBC}", "--image", str(path), "--catalog", "pbc",
                 "--condition", "lymphocyte", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    record = json.loads(capsys.readouterr().out)
    p = float(load_classifier(WBC).predict_proba([cells[0]])[0, 4])  # lymphocyte
    assert record["backend"] == "classifier" and record["score"] == sum(p >= level for level in DEFAULT_LEVELS)


def test_a_classifier_evaluator_can_be_built_from_a_loaded_model(cells):
    classifier = load_classifier(WBC)
    evaluator = ClassifierEvaluator(classifier, levels=(0.5,))
    p = float(classifier.predict_proba([cells[1]])[0, classifier.label_names.index("neutrophil")])
    assert evaluator.evaluate(cells[1], "pbc:neutrophil").scores == [int(p >= 0.5)]
    assert evaluator.backend_id == "classifier:unsaved-levels-0.5"


def test_an_ensemble_grades_the_mean_probability_of_its_members(tmp_path, cells):
    import json
    import shutil

    from magic.feedback import FeedbackLoopConfig, run_feedback_loop
    from magic.generation import Generator

    wbc = load_classifier(WBC)
    # a second member whose classes are listed in another order (its logits permuted to match): same opinions
    reordered = tmp_path / "reordered"
    shutil.copytree(WBC, reordered)
    config = json.loads((reordered / "config.json").read_text())
    order = list(reversed(config["label_names"]))
    config["label_names"] = order
    (reordered / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    state = load_file(reordered / "model.safetensors")
    head = [key for key in state if state[key].shape[:1] == (8,) and key.startswith("classifier.")]
    assert head, "the classifier head must be found to permute it"
    index = [wbc.label_names.index(name) for name in order]
    save_file({key: (value[index].contiguous() if key in head else value) for key, value in state.items()},
              reordered / "model.safetensors")

    single = load_evaluator(f"classifier:{WBC}")
    ensemble = load_evaluator(f"classifier:{WBC}+{reordered}")
    assert len(ensemble.classifiers) == 2 and ensemble.backend_id.count("+") == 1
    assert ensemble.backend_id != single.backend_id
    p = wbc.predict_proba(cells)
    assert ensemble.predict_proba(cells) == pytest.approx(p, abs=1e-5)  # the same model, however its classes are listed
    for condition in ("lymphocyte", "eosinophil"):
        assert ([v.scores for v in ensemble.evaluate_batch(cells, f"pbc:{condition}")]
                == [v.scores for v in single.evaluate_batch(cells, f"pbc:{condition}")])
    with pytest.raises(ValueError, match="classifier the loop optimises"):  # neither member may be the judge
        run_feedback_loop(Generator.from_pretrained(WEIGHTS_DIR / "wbc-generator"), ensemble,
                          FeedbackLoopConfig(rounds=0, samples_per_condition=2), judge=load_classifier(reordered))


def test_an_ensemble_needs_members_that_know_the_same_classes(cells):
    skin = WEIGHTS_DIR / "skin-classifier"
    with pytest.raises(ValueError, match="must know the same classes"):
        load_evaluator(f"classifier:{WBC}+{skin}")
