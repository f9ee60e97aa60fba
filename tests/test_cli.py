import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_CLASSES, draw_shape

ROOT = Path(__file__).resolve().parent.parent
PBC = ROOT.parent / "shared" / "data" / "pbc"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m magic ARGS`` in this process: ``magic.cli.main``, which ``python -m magic`` calls, with its
    stdout, stderr and exit status captured (a fresh interpreter spends ~15 s importing torch, timm and diffusers on
    a 2-core CPU; ``run_cli_process`` is the real process, used where the process itself is what is tested)."""
    from magic.cli import main

    stdout, stderr, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["magic", *args], code, stdout.getvalue(), stderr.getvalue())


def run_cli_process(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m magic ARGS`` in a new interpreter."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "magic", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def _options(parser) -> dict[str, set[str]]:
    """Every subcommand's option strings (a nested command such as ``experiment augment`` under its full name)."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = {option for act in sub._actions for option in act.option_strings}
                found.update({f"{name} {inner}": options for inner, options in _options(sub).items()})
    return found


def test_each_command_built_alone_has_every_option_of_the_full_parser():
    """``main`` builds only the named command's config options; built that way, each command must accept exactly
    what the complete parser gives it (a misspelt command name in the builder would drop its options)."""
    from magic.cli import build_parser

    full = _options(build_parser())
    assert len(full) >= 23 and "--lr" in full["train-classifier"] and "--shots" in full["train-class-loras"]
    for name, options in full.items():
        assert _options(build_parser(command=name.split()[0]))[name] == options, name
    assert "--lr" not in _options(build_parser(command="publish"))["train-classifier"]


def test_help_lists_every_command_without_importing_the_model_stack():
    """``python -m magic --help`` took ~14 s on a 2-core CPU when building the parser imported torch, timm and
    diffusers for the config dataclasses; it now imports none of them."""
    code = ("import sys\nfrom magic.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('torch', 'timm', 'diffusers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    for command in ("train-classifier", "train-generator", "feedback-loop", "generate-dataset", "train-evaluator",
                    "experiment", "publish"):
        assert command in result.stdout


def test_eval_classifier_prints_one_json_object(tiny_classifier_dir, tiny_dataset):
    result = run_cli("eval-classifier", "--model", str(tiny_classifier_dir), "--data", str(tiny_dataset),
                     "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 18 and 0 <= report["accuracy"] <= 1 and 0 <= report["macro_f1"] <= 1
    assert set(report["per_class_recall"]) == set(TINY_CLASSES)


def test_train_classifier_writes_a_hub_shaped_folder_with_card(tiny_dataset, tmp_path):
    out = tmp_path / "trained"
    result = run_cli("train-classifier", "--data", str(tiny_dataset), "--output", str(out), "--architecture",
                     "test_efficientnet", "--no-pretrained", "--image-size", "32", "--max-steps", "4",
                     "--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--k-shot", "6")
    assert result.returncode == 0, result.stderr
    assert {"config.json", "model.safetensors", "README.md", "metrics.json", "confusion_matrix.png"} <= {
        path.name for path in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "license:" in card and "not a medical device" in card and "| accuracy |" in card
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 18
    config = json.loads((out / "config.json").read_text())
    assert config["magic"]["train_images"] == 18  # 6-shot x 3 classes


def test_predict_ranks_classes_for_image_files(tiny_classifier_dir, tmp_path):
    import numpy as np

    path = tmp_path / "disc.png"
    draw_shape("disc", np.random.default_rng(0)).save(path)
    result = run_cli("predict", "--model", str(tiny_classifier_dir), str(path), "--top-k", "2", "--json")
    assert result.returncode == 0, result.stderr
    [answer] = json.loads(result.stdout)
    assert len(answer["labels"]) == 2 and answer["labels"][0] in TINY_CLASSES


def test_cli_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = run_cli_process("predict", "--model", "magic-suite/wbc-classifier", str(bad))
    assert result.returncode == 2 and "not an image" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("eval-classifier", "--model", "nobody/missing", "--data", str(tmp_path))
    assert result.returncode == 2 and "Could not get model" in result.stderr


@pytest.mark.skipif(not PBC.is_dir(), reason="needs ../shared/data/pbc (present in CI)")
def test_embedded_wbc_classifier_meets_its_accuracy_on_the_pbc_test_split():
    result = run_cli("eval-classifier", "--model", "magic-suite/wbc-classifier", "--data", str(PBC), "--split",
                     "test", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 3009
    assert report["accuracy"] >= 0.97


def test_train_generator_takes_the_prompt_from_the_catalog_or_asks_for_one(tmp_path):
    from tests.conftest import make_image_dataset

    tiny = ["--image-size", "32", "--text-encoder", "random-tiny", "--latent-channels", "4", "--vae-channels", "32",
            "32", "--unet-channels", "32", "64", "--vae-steps", "1", "--unet-steps", "1", "--batch-size", "2",
            "--device", "cpu"]
    skin = make_image_dataset(tmp_path / "skin", {"train": [2, 2]}, names=["melanoma", "dermatofibroma"])
    result = run_cli("train-generator", "--data", str(skin), "--output", str(tmp_path / "skin-sd"), *tiny)
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "skin-sd" / "magic_generator.json").read_text())
    assert info["prompt_template"] == "a dermoscopy image of a {name} skin lesion"
    # the feedback loop judges a skin-lesion generator by the skin-lesion checklists without being told
    result = run_cli("feedback-loop", "--generator", str(tmp_path / "skin-sd"), "--rounds", "0",
                     "--eval-per-condition", "1", "--steps", "1", "--output", str(tmp_path / "loop"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "loop" / "report.json").read_text())
    assert report["config"]["catalog"] == "ham10000" and len(report["rounds"]) == 1

    shapes = make_image_dataset(tmp_path / "shapes", {"train": [2, 2]}, names=["disc", "square"])
    result = run_cli("train-generator", "--data", str(shapes), "--output", str(tmp_path / "shapes-sd"), *tiny)
    assert result.returncode != 0 and "--prompt-template" in result.stderr and "disc, square" in result.stderr
    assert not (tmp_path / "shapes-sd").exists()


def test_train_generator_then_feedback_loop_from_the_command_line(tmp_path):
    from tests.conftest import make_image_dataset

    data = make_image_dataset(tmp_path / "cells", {"train": [4, 4]}, names=["basophil", "ig"])
    generator = tmp_path / "generator"
    result = run_cli("train-generator", "--data", str(data), "--output", str(generator), "--image-size", "32",
                     "--text-encoder", "random-tiny", "--latent-channels", "4", "--vae-channels", "32", "32",
                     "--unet-channels", "32", "64", "--vae-steps", "2", "--unet-steps", "2", "--batch-size", "4",
                     "--device", "cpu", "--prompt-template", "a {name} cell")
    assert result.returncode == 0, result.stderr
    info = json.loads((generator / "magic_generator.json").read_text())
    assert info["label_names"] == ["basophil", "ig"] and info["prompt_template"] == "a {name} cell"
    assert "latent" in (generator / "README.md").read_text() and (generator / "vae" / "config.json").is_file()

    loop = tmp_path / "loop"
    result = run_cli("feedback-loop", "--generator", str(generator), "--rounds", "1", "--samples-per-condition", "2",
                     "--eval-per-condition", "2", "--steps", "2", "--method", "rft", "--train-steps", "2",
                     "--output", str(loop), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rounds = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"round"')]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["training"]["method"] == "rft"
    report = json.loads((loop / "report.json").read_text())
    assert len(report["rounds"]) == 2 and (loop / "lora" / "pytorch_lora_weights.safetensors").is_file()
    silent = report["rounds"][1]["training"]["conditions_without_signal"]
    assert rounds[1]["training"]["conditions_without_signal"] == silent
    assert (f"every pair of {', '.join(silent)} lost" in result.stderr) == bool(silent)

    result = run_cli("feedback-loop", "--generator", str(generator), "--conditions", "platelet", "--output",
                     str(tmp_path / "bad"))
    assert result.returncode != 0 and "not trained on ['platelet']" in result.stderr
