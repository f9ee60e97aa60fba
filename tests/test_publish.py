"""Publishing to the Hub, proven offline against the local fake Hub in tests/hub_server.py: upload with the CLI,
load back in a fresh process the way a researcher would, and refuse what must not be published."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file

from magic.cli import main
from magic.publish import PublishError, publish
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_fakeTokenThatMustNeverBePrinted123"
ORG = "magic-test"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("fake_hub")) as server:
        yield server


@pytest.fixture(scope="module")
def hub_env(hub, tmp_path_factory) -> dict[str, str]:
    """A client environment that talks to the fake Hub only, with a fresh cache."""
    home = tmp_path_factory.mktemp("hf_home")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
            "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets"), "HF_HUB_DISABLE_TELEMETRY": "1"}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert TOKEN not in result.stdout + result.stderr
    return result


def publish_cli(folder: Path, repo_id: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return run(["-m", "magic", "publish", str(folder), "--repo-id", repo_id, *extra], env)


def hub_files(hub: HubServer, repo_type: str, repo_id: str) -> set[str]:
    repo = hub.hub.repos[(repo_type, repo_id)]
    return set(repo.commits[repo.branches["main"]].files)


LOAD_MODEL = """
import json, sys, timm, torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from magic import load_classifier
repo_id, work = sys.argv[1], sys.argv[2]
x = load_file(work + "/input.safetensors")["x"]
with torch.no_grad():
    timm_logits = timm.create_model("hf-hub:" + repo_id, pretrained=True).eval()(x)
    magic_logits = load_classifier(repo_id).eval()(x)
save_file({"timm": timm_logits.contiguous(), "magic": magic_logits.contiguous()}, work + "/output.safetensors")
card = ModelCard.load(repo_id).data
print(json.dumps({"license": card.license, "library_name": card.library_name}))
"""


def test_publish_classifier_then_load_it_back_with_timm_and_magic(hub, hub_env, tiny_classifier_dir, tmp_path):
    import timm

    from magic import load_classifier
    from magic.cards import write_classifier_card

    folder = shutil.copytree(tiny_classifier_dir, tmp_path / "tiny-classifier")
    repo_id = f"{ORG}/tiny-classifier"
    write_classifier_card(folder, classifier=load_classifier(folder), repo_id=repo_id, dataset="tiny", metrics=None)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"\0")
    (folder / ".DS_Store").write_bytes(b"\0")

    result = publish_cli(folder, repo_id, hub_env, "--message", "First release")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    answer = json.loads(line)
    assert answer["repo_id"] == repo_id and answer["repo_type"] == "model"
    assert answer["commit_url"].startswith(f"{hub.url}/{repo_id}/commit/")
    assert hub_files(hub, "model", repo_id) == {".gitattributes", *(p.name for p in tiny_classifier_dir.iterdir()),
                                                "README.md"}

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, *timm.data.resolve_data_config(model=model)["input_size"],
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    save_file({"x": x}, tmp_path / "input.safetensors")
    loaded = run(["-c", LOAD_MODEL, repo_id, str(tmp_path)], hub_env)
    assert loaded.returncode == 0, loaded.stderr
    outputs = load_file(tmp_path / "output.safetensors")
    torch.testing.assert_close(outputs["timm"], expected)
    torch.testing.assert_close(outputs["magic"], expected)
    card = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert card["license"] == huggingface_hub.metadata_load(folder / "README.md")["license"]
    assert card["library_name"] == "timm"


DATASET_CARD = """---
license: cc0-1.0
pretty_name: Tiny shapes
task_categories:
- image-classification
---
# Tiny shapes

Discs, squares and crosses drawn on noise, for tests.
"""

LOAD_DATASET = """
import json, sys, datasets
data = datasets.load_dataset(sys.argv[1])
print(json.dumps({split: {"rows": part.num_rows, "names": part.features["label"].names, "labels": list(part["label"]),
                          "files": list(part["source_file"])} for split, part in data.items()}))
"""


def test_publish_dataset_then_load_it_back_with_datasets(hub, hub_env, tiny_dataset, tmp_path):
    from magic import load_image_dataset

    folder = shutil.copytree(tiny_dataset, tmp_path / "tiny-shapes")
    (folder / "README.md").write_text(DATASET_CARD)
    repo_id = f"{ORG}/tiny-shapes"

    result = publish_cli(folder, repo_id, hub_env)  # repo type detected from data/*.parquet
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["repo_type"] == "dataset"
    assert answer["commit_url"].startswith(f"{hub.url}/datasets/{repo_id}/commit/")

    loaded = run(["-c", LOAD_DATASET, repo_id], hub_env)
    assert loaded.returncode == 0, loaded.stderr
    remote = json.loads(loaded.stdout.strip().splitlines()[-1])
    local = load_image_dataset(tiny_dataset)
    assert set(remote) == set(local) == {"train", "validation", "test"}
    for split, data in local.items():
        assert remote[split]["rows"] == data.num_rows
        assert remote[split]["names"] == data.features["label"].names
        assert remote[split]["labels"] == list(data["label"]) and remote[split]["files"] == list(data["source_file"])


def model_folder(tmp_path: Path, tiny_classifier_dir: Path, name: str) -> Path:
    folder = shutil.copytree(tiny_classifier_dir, tmp_path / name)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: timm\n---\n# A model\n")
    return folder


@pytest.mark.parametrize("case, message", [
    ("pickle", r"pickle-format files \(pytorch_model\.bin\).*safetensors only"),
    ("no_card", r"no README\.md card: write one"),
    ("no_license", r"no 'license' in its YAML metadata"),
    ("no_safetensors", r"needs config\.json and \*\.safetensors"),
])
def test_publish_refuses_unfit_folders_before_uploading(hub, tiny_classifier_dir, tmp_path, monkeypatch, case,
                                                        message):
    folder = model_folder(tmp_path, tiny_classifier_dir, case)
    if case == "pickle":
        torch.save({"weight": torch.zeros(1)}, folder / "pytorch_model.bin")
    elif case == "no_card":
        (folder / "README.md").unlink()
    elif case == "no_license":
        (folder / "README.md").write_text("---\nlibrary_name: timm\n---\n# A model\n")
    else:
        for path in folder.glob("*.safetensors"):
            path.unlink()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # so an upload would really happen
    requests_before = len(hub.hub.log)
    with pytest.raises(PublishError, match=message):
        publish(folder, f"{ORG}/{case}", endpoint=hub.url, token=TOKEN)
    assert len(hub.hub.log) == requests_before and ("model", f"{ORG}/{case}") not in hub.hub.repos


def test_cli_refuses_a_missing_folder_in_one_line(hub, tmp_path, capsys):
    requests_before = len(hub.hub.log)
    assert main(["publish", str(tmp_path / "nowhere"), "--repo-id", f"{ORG}/nowhere"]) == 2  # nothing raised
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert out == "" and line.startswith("magic publish: error: ") and "is not a folder" in line
    assert len(hub.hub.log) == requests_before
