"""No pickle is ever loaded and no remote code is ever trusted: static checks over the project's own Python files
(with the ast module, so aliases and keyword arguments are understood) and runtime checks that magic's loaders refuse
a pickle-only model folder without unpickling it."""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ["magic", "spaces", "scripts", "benchmarks"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: Calls that unpickle whatever they are given.
UNPICKLING_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
                    "_pickle.load", "_pickle.loads", "dill.load", "dill.loads", "joblib.load", "cloudpickle.load",
                    "cloudpickle.loads", "pandas.read_pickle", "torch.serialization.load"}


def project_files() -> list[Path]:
    files = [ROOT / "app.py"] + [path for folder in SOURCE_DIRS for path in sorted((ROOT / folder).rglob("*.py"))]
    return [path for path in files if "__pycache__" not in path.parts]


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_literal(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every call in ``source`` that could load a pickle or trust remote code, as 'file:line: why'."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> full dotted name, from the file's imports
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                    alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    aliases.setdefault("pd", "pandas")
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Dict):  # **{"trust_remote_code": True} and config dicts
            for key, value in zip(node.keys, node.values, strict=True):
                if _is_literal_str(key, "trust_remote_code") and not _is_literal(value, False):
                    found.append(f"{where}: trust_remote_code must be False")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is not None:
            head, _, rest = name.partition(".")
            name = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords if keyword.arg is not None}
        if name in UNPICKLING_CALLS:
            found.append(f"{where}: {name} unpickles")
        if name == "torch.load" and not _is_literal(keywords.get("weights_only"), True):
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("numpy.load", "np.load") and "allow_pickle" in keywords \
                and not _is_literal(keywords["allow_pickle"], False):
            found.append(f"{where}: numpy.load with allow_pickle")
        if "trust_remote_code" in keywords and not _is_literal(keywords["trust_remote_code"], False):
            found.append(f"{where}: trust_remote_code must be False")
    return found


def _is_literal_str(node: ast.AST | None, value: str) -> bool:
    return isinstance(node, ast.Constant) and node.value == value


def test_the_project_has_python_files_to_check():
    files = {path.relative_to(ROOT).as_posix() for path in project_files()}
    assert {"app.py", "magic/publish.py", "magic/hub.py", "spaces/common.py"} <= files
    assert any(name.startswith("benchmarks/") for name in files)


@pytest.mark.parametrize("path", project_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_pickle_loading_and_no_remote_code_in_project_files(path):
    assert unsafe_calls(path.read_text(), path.relative_to(ROOT).as_posix()) == []


@pytest.mark.parametrize("source", [
    "import pickle\npickle.load(open('x', 'rb'))",
    "import pickle as p\np.loads(b'')",
    "from pickle import loads\nloads(b'')",
    "import torch\ntorch.load('x.pt')",
    "import torch\ntorch.load('x.pt', weights_only=False)",
    "import torch\nflag = True\ntorch.load('x.pt', weights_only=flag)",
    "from torch import load as tload\ntload('x.pt')",
    "import joblib\njoblib.load('m.joblib')",
    "import pandas as pd\npd.read_pickle('x.pkl')",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
    "from transformers import AutoModel\nAutoModel.from_pretrained('x', trust_remote_code=True)",
    "from transformers import AutoModel\nyes = 1\nAutoModel.from_pretrained('x', trust_remote_code=yes)",
    "from datasets import load_dataset\nload_dataset('x', **{'trust_remote_code': True})",
])
def test_the_checker_catches_each_unsafe_pattern(source):
    assert unsafe_calls(source), source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load('x.pt', map_location='cpu', weights_only=True)",
    "from transformers import AutoModel\nAutoModel.from_pretrained('x', trust_remote_code=False)",
    "import numpy as np\nnp.load('x.npy')",
    "import json\njson.loads('{}')",
    "from safetensors.torch import load_file\nload_file('x.safetensors')",
])
def test_the_checker_passes_safe_calls(source):
    assert unsafe_calls(source) == []


def test_no_pickle_format_files_under_weights():
    weights = ROOT / "weights"
    assert weights.is_dir() and any(weights.rglob("*.safetensors"))
    pickles = [path.relative_to(ROOT).as_posix() for path in weights.rglob("*")
               if path.is_file() and path.name.lower().endswith(PICKLE_SUFFIXES)]
    assert pickles == []


class _Tripwire:
    """Unpickling this creates the file named by ``path``: proof that a loader unpickled something."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _plant_pickle(path: Path, tripwire: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weight": _Tripwire(tripwire)}))


def test_the_tripwire_fires_when_unpickled(tmp_path):
    _plant_pickle(tmp_path / "model.bin", tmp_path / "fired")
    pickle.loads((tmp_path / "model.bin").read_bytes())  # noqa: S301 (the point of this test)
    assert (tmp_path / "fired").exists()


def test_load_classifier_refuses_a_pickle_only_folder_without_unpickling(tmp_path):
    from magic import load_classifier

    folder = tmp_path / "pickled-classifier"
    folder.mkdir()
    shutil.copy(ROOT / "weights" / "wbc-classifier" / "config.json", folder / "config.json")
    _plant_pickle(folder / "pytorch_model.bin", tmp_path / "fired")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors \(safetensors only\)"):
        load_classifier(folder)
    assert not (tmp_path / "fired").exists()


def test_generator_refuses_a_pickle_only_pipeline_without_unpickling(tmp_path):
    from magic.generation import Generator, TinySDConfig, build_pipeline

    folder = tmp_path / "pickled-pipeline"
    build_pipeline(TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                                text_encoder="random-tiny", max_prompt_tokens=16)).save_pretrained(
        folder, safe_serialization=False)
    for path in folder.rglob("*.safetensors"):  # recent transformers writes safetensors whatever it is asked
        path.unlink()
        _plant_pickle(path.parent / "pytorch_model.bin", tmp_path / "unused")
    weights = sorted(folder.rglob("*.bin"))
    assert {path.parent.name for path in weights} == {"unet", "vae", "text_encoder"}
    for path in weights:  # each component's weights become a booby-trapped pickle
        _plant_pickle(path, tmp_path / f"fired-{path.parent.name}")
    assert not list(folder.rglob("*.safetensors"))
    with pytest.raises(OSError, match=r"no file named \w+\.safetensors"):  # diffusers, as use_safetensors=True
        Generator.from_pretrained(folder, device="cpu")
    assert not list(tmp_path.glob("fired-*"))
