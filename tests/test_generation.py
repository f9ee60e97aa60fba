"""The generator on a tiny SD-architecture pipeline built in code: determinism, save/load, LoRA, textual inversion."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from magic.generation import GenerationSettings, Generator, TinySDConfig, build_pipeline
from magic.generation.adapters import (
    add_lora,
    add_token,
    load_learned_embeds,
    load_lora,
    save_learned_embeds,
    save_lora,
)
from magic.generation.train import DenoiserTrainConfig, train_denoiser
from magic.hub import WEIGHTS_DIR
from tests.conftest import draw_shape

TINY = TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                    text_encoder="random-tiny", max_prompt_tokens=16)
FAST = GenerationSettings(steps=3, guidance=3.0, seed=11)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    build_pipeline(TINY).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def shapes():
    rng = np.random.default_rng(0)
    images = [draw_shape(kind, rng) for kind in ("disc", "square") * 4]
    prompts = [f"a {kind} shape" for kind in ("disc", "square") * 4]
    return images, prompts


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))


def test_text_to_image_is_deterministic_for_a_seed_and_varies_across_images(pipeline_dir):
    generator = Generator.from_pretrained(pipeline_dir)
    first = generator.text_to_image("a disc shape", FAST, num_images=2)
    assert _same(first, generator.text_to_image("a disc shape", FAST, num_images=2))
    assert not _same(first[:1], first[1:])
    assert first[0].size == (32, 32) and first[0].mode == "RGB"


def test_save_load_round_trip_gives_identical_images(pipeline_dir, tmp_path):
    generator = Generator.from_pretrained(pipeline_dir)
    generator.pipeline.save_pretrained(tmp_path / "again", safe_serialization=True)
    assert not list((tmp_path / "again").rglob("*.bin"))
    assert _same(generator.text_to_image("a square shape", FAST),
                 Generator.from_pretrained(tmp_path / "again").text_to_image("a square shape", FAST))


def test_image_to_image_keeps_size_and_rejects_mismatched_prompts(pipeline_dir, shapes):
    generator = Generator.from_pretrained(pipeline_dir)
    images, _ = shapes
    out = generator.image_to_image(images[:2], "a square shape", GenerationSettings(steps=4, strength=0.5, seed=1))
    assert len(out) == 2 and out[0].size == (32, 32)
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        generator.image_to_image(images[:3], ["a", "b"], FAST)


def test_a_model_that_decodes_nan_or_black_raises_instead_of_returning_black_images(pipeline_dir):
    from magic.generation import GenerationError

    broken = Generator.from_pretrained(pipeline_dir)
    with torch.no_grad():
        broken.pipeline.vae.decoder.conv_out.bias.fill_(float("nan"))
    with pytest.raises(GenerationError, match=r"Images \[0, 1\] came out NaN or black"):
        broken.text_to_image("a disc shape", FAST, num_images=2)

    black = Generator.from_pretrained(pipeline_dir)
    with torch.no_grad():
        black.pipeline.vae.decoder.conv_out.weight.zero_()
        black.pipeline.vae.decoder.conv_out.bias.fill_(-10.0)  # decodes to -1 everywhere: a black image
    with pytest.raises(GenerationError, match="NaN or black"):
        black.image_to_image(Generator.from_pretrained(pipeline_dir).text_to_image("a disc shape", FAST),
                             "a square shape", GenerationSettings(steps=4, strength=0.5, seed=1))



def test_the_sd21_base_architecture_has_the_published_sizes():
    """The large size of the throughput benchmark: SD 2.1-base's UNet and VAE configs give its parameter counts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from magic.generation.components import SD21_BASE_UNET, SD21_BASE_VAE

    with torch.device("meta"):  # shapes only: no memory, no weights
        unet, vae = UNet2DConditionModel(**SD21_BASE_UNET), AutoencoderKL(**SD21_BASE_VAE)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert unet.config.cross_attention_dim == 1024 and 2 ** (len(vae.config.block_out_channels) - 1) * 64 == 512

def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="strength"):
        GenerationSettings(strength=0)
    with pytest.raises(ValueError, match="steps"):
        GenerationSettings(steps=0)


def test_lora_training_then_save_load_reproduces_the_images(pipeline_dir, shapes, tmp_path):
    generator = Generator.from_pretrained(pipeline_dir)
    before = generator.text_to_image("a disc shape", FAST)
    history = train_denoiser(generator.pipeline, *shapes,
                             DenoiserTrainConfig(method="lora", steps=4, batch_size=4, lr=1e-2, lora_rank=4))
    assert len(history) == 4 and all(np.isfinite(r["loss"]) for r in history)
    after = generator.text_to_image("a disc shape", FAST)
    assert not _same(before, after)
    save_lora(generator.pipeline, tmp_path / "lora")
    reloaded = Generator.from_pretrained(pipeline_dir)
    load_lora(reloaded.pipeline, tmp_path / "lora")
    assert _same(after, reloaded.text_to_image("a disc shape", FAST))


def test_a_lora_exported_to_float16_loads_and_draws_the_same_images(pipeline_dir, tmp_path):
    from safetensors.torch import load_file

    from magic.cli import main

    generator = Generator.from_pretrained(pipeline_dir)
    add_lora(generator.pipeline, rank=4)
    torch.manual_seed(0)
    for name, parameter in generator.pipeline.unet.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.2)
    save_lora(generator.pipeline, tmp_path / "lora")
    (tmp_path / "lora" / "README.md").write_text("a card\n")
    assert main(["export-generator", str(tmp_path / "lora"), str(tmp_path / "lora16")]) == 0
    weights = load_file(tmp_path / "lora16" / "pytorch_lora_weights.safetensors")
    original = load_file(tmp_path / "lora" / "pytorch_lora_weights.safetensors")
    assert weights.keys() == original.keys() and {w.dtype for w in weights.values()} == {torch.float16}
    assert (tmp_path / "lora16" / "README.md").read_text() == "a card\n"
    reloaded = Generator.from_pretrained(pipeline_dir)
    load_lora(reloaded.pipeline, tmp_path / "lora16")
    ours, theirs = (np.asarray(g.text_to_image("a disc shape", FAST)[0], dtype=np.int16) for g in (generator, reloaded))
    assert np.abs(ours - theirs).max() <= 2  # float16 rounding of the LoRA only
    with pytest.raises(ValueError, match="does not fit this pipeline"):  # a LoRA for another base model
        load_lora(Generator.from_pretrained(pipeline_dir).pipeline, WEIGHTS_DIR / "wbc-generator-feedback-lora")


def test_a_lora_on_a_half_precision_unet_trains_in_float32(pipeline_dir):
    generator = Generator.from_pretrained(pipeline_dir, dtype=torch.float16)
    add_lora(generator.pipeline, rank=4)
    named = dict(generator.pipeline.unet.named_parameters())
    lora = {name: p for name, p in named.items() if "lora_" in name}
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora.values())
    assert all(p.dtype == torch.float16 and not p.requires_grad for name, p in named.items() if name not in lora)


def test_textual_inversion_trains_only_the_new_token(pipeline_dir, shapes, tmp_path):
    generator = Generator.from_pretrained(pipeline_dir)
    embeddings = generator.pipeline.text_encoder.get_input_embeddings()
    token_id = add_token(generator.pipeline, "<disc>", "circle")
    old = embeddings.weight.detach().clone() if embeddings is generator.pipeline.text_encoder.get_input_embeddings() \
        else generator.pipeline.text_encoder.get_input_embeddings().weight.detach().clone()
    images, _ = shapes
    train_denoiser(generator.pipeline, images, ["a <disc> shape"] * len(images),
                   DenoiserTrainConfig(method="textual-inversion", steps=3, batch_size=4, lr=5e-2),
                   new_token_ids=[token_id])
    new = generator.pipeline.text_encoder.get_input_embeddings().weight.detach()
    changed = (new != old).any(dim=1).nonzero().flatten().tolist()
    assert changed == [token_id]
    out = generator.text_to_image("a <disc> shape", FAST)
    save_learned_embeds(generator.pipeline, ["<disc>"], tmp_path / "embeds.safetensors")
    reloaded = Generator.from_pretrained(pipeline_dir)
    assert load_learned_embeds(reloaded.pipeline, tmp_path / "embeds.safetensors") == ["<disc>"]
    assert _same(out, reloaded.text_to_image("a <disc> shape", FAST))


def test_full_training_moves_the_unet(pipeline_dir, shapes):
    generator = Generator.from_pretrained(pipeline_dir)
    weight = next(generator.pipeline.unet.parameters()).detach().clone()
    train_denoiser(generator.pipeline, *shapes, DenoiserTrainConfig(method="full", steps=2, batch_size=4))
    assert not torch.equal(weight, next(generator.pipeline.unet.parameters()).detach())


def test_generate_dataset_resumes_without_duplicates_or_losses(pipeline_dir, tmp_path):
    import datasets

    from magic.generation.dataset import completed_jobs, count_plan, generate_dataset, write_dataset_card

    generator = Generator.from_pretrained(pipeline_dir)
    names = ["disc", "square"]
    jobs = count_plan(names, per_class=3, prompt_template="a {name} shape", seed=5)
    settings = GenerationSettings(steps=2, guidance=2.0, seed=0)
    out = tmp_path / "synthetic"
    assert generate_dataset(generator, jobs, out, names, settings, shard_size=2, limit=3) == 3  # "killed" early
    assert len(completed_jobs(out)) == 3
    assert generate_dataset(generator, jobs, out, names, settings, shard_size=2) == 3  # resumed
    assert generate_dataset(generator, jobs, out, names, settings, shard_size=2) == 0  # nothing left
    write_dataset_card(out, names, str(pipeline_dir), settings, license="cc-by-4.0")
    data = datasets.load_dataset(str(out), split="train")
    assert sorted(data["job_id"]) == sorted(job.job_id for job in jobs)
    assert data.features["label"].names == names and set(data["mode"]) == {"t2i"}
    fresh = tmp_path / "fresh"
    generate_dataset(generator, jobs, fresh, names, settings, shard_size=10)
    again = {row["job_id"]: np.asarray(row["image"]) for row in datasets.load_dataset(str(fresh), split="train")}
    assert all(np.array_equal(np.asarray(row["image"]), again[row["job_id"]]) for row in data)


def test_batched_generation_resumes_to_the_same_pixels_and_matches_single_images_up_to_rounding(pipeline_dir,
                                                                                                   tmp_path):
    import datasets

    from magic.generation.dataset import completed_jobs, count_plan, generate_dataset

    generator = Generator.from_pretrained(pipeline_dir)
    names = ["disc", "square"]
    jobs = count_plan(names, per_class=5, prompt_template="a {name} shape", seed=3)
    settings = GenerationSettings(steps=2, guidance=2.0, seed=0)

    def pixels(folder):
        return {row["job_id"]: np.asarray(row["image"], dtype=np.int16)
                for row in datasets.load_dataset(str(folder), split="train")}

    resumed = tmp_path / "resumed"  # shard_size 3 is rounded up to 4 (two batches of 2): a kill loses whole batches
    assert generate_dataset(generator, jobs, resumed, names, settings, shard_size=3, batch_size=2, limit=4) == 4
    assert completed_jobs(resumed) == {job.job_id for job in jobs[:4]}
    assert generate_dataset(generator, jobs, resumed, names, settings, shard_size=3, batch_size=2) == 6
    whole = tmp_path / "whole"
    assert generate_dataset(generator, jobs, whole, names, settings, shard_size=64, batch_size=2) == 10
    single = tmp_path / "single"
    generate_dataset(generator, jobs, single, names, settings, batch_size=1)
    resumed, whole, single = pixels(resumed), pixels(whole), pixels(single)
    assert sorted(resumed) == sorted(whole) == sorted(job.job_id for job in jobs)
    assert all(np.array_equal(resumed[key], whole[key]) for key in whole)
    assert max(int(np.abs(whole[key] - single[key]).max()) for key in whole) <= 2  # rounding, not other images
    assert all(np.array_equal(single[job.job_id], np.asarray(generator.text_to_image(
        job.prompt, GenerationSettings(steps=2, guidance=2.0, seed=job.seed))[0])) for job in jobs[:2])
    with pytest.raises(ValueError, match="one seed per image"):
        generator.text_to_image(["a disc shape"] * 2, settings, seeds=[1])
    with pytest.raises(ValueError, match="batch_size"):
        generate_dataset(generator, jobs, tmp_path / "bad", names, settings, batch_size=0)


def test_magic_plan_translates_every_real_image_to_another_condition(pipeline_dir, tiny_dataset, tmp_path):
    import datasets

    from magic.data import load_image_dataset
    from magic.generation.dataset import generate_dataset, magic_plan

    source = load_image_dataset(tiny_dataset, split="test")
    jobs = magic_plan(source, "a {name} shape", seed=1)
    assert len(jobs) == len(source) and all(job.label != job.source_label for job in jobs)
    subset = jobs[:3]
    generate_dataset(Generator.from_pretrained(pipeline_dir), subset, tmp_path / "i2i", source.features["label"].names,
                     GenerationSettings(steps=2, strength=0.5), source=source)
    data = datasets.load_dataset(str(tmp_path / "i2i"), split="train")
    assert set(data["mode"]) == {"i2i"} and data["source_id"] == [job.source_id for job in subset]


def test_translate_mode_gives_a_count_per_class_from_images_of_other_classes(pipeline_dir, tiny_dataset, tmp_path):
    import datasets

    from magic.data import load_image_dataset
    from magic.generation.dataset import translation_plan
    from tests.test_cli import run_cli

    source = load_image_dataset(tiny_dataset, split="test")
    names = source.features["label"].names
    jobs = translation_plan(source, 3, "a {name} shape", seed=2)
    assert [job.label for job in jobs] == [name for name in names for _ in range(3)]
    assert all(job.source_label != job.label and names[source[job.source_index]["label"]] == job.source_label
               for job in jobs)
    assert translation_plan(source, 5, "a {name} shape", seed=2)[:3] == jobs[:3]  # a larger count extends
    out = tmp_path / "translated"
    result = run_cli("generate-dataset", "--model", str(pipeline_dir), "--output", str(out), "--mode", "translate",
                     "--source-data", str(tiny_dataset), "--source-split", "test", "--per-class", "2",
                     "--prompt-template", "a {name} shape", "--steps", "2", "--strength", "0.5", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    data = datasets.load_dataset(str(out), split="train")
    assert len(data) == 2 * len(names) and set(data["mode"]) == {"i2i"} and set(data["strength"]) == {0.5}
    assert all(row["source_label"] != names[row["label"]] for row in data)


def test_generate_dataset_cli_writes_a_loadable_dataset(pipeline_dir, tmp_path):
    import datasets

    from tests.test_cli import run_cli

    out = tmp_path / "cli-synthetic"
    result = run_cli("generate-dataset", "--model", str(pipeline_dir), "--output", str(out), "--classes",
                     "disc,square", "--per-class", "2", "--prompt-template", "a {name} shape", "--steps", "2",
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert json_line(result.stdout)["written"] == 4
    data = datasets.load_dataset(str(out), split="train")
    assert len(data) == 4 and "license: cc-by-4.0" in (out / "README.md").read_text()
    bad = run_cli("generate-dataset", "--model", str(pipeline_dir), "--output", str(out), "--mode", "magic")
    assert bad.returncode == 2 and "--source-data" in bad.stderr


def test_class_loras_are_learnt_per_class_and_draw_that_classs_images(pipeline_dir, tiny_dataset, tmp_path):
    """CytoDiff: a LoRA per class from k real images; the dataset drawn with them records which LoRA made each
    image, and that LoRA loaded into a fresh pipeline reproduces the image exactly."""
    import datasets

    from tests.test_cli import run_cli

    loras = tmp_path / "loras"
    result = run_cli("train-class-loras", "--generator", str(pipeline_dir), "--data", str(tiny_dataset), "--output",
                     str(loras), "--shots", "2", "--steps", "2", "--batch-size", "2", "--rank", "4",
                     "--prompt-template", "a {name} shape", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sorted(json_line(result.stdout)["loras"]) == ["cross", "disc", "square"]
    settings = json.loads((loras / "disc" / "magic_class_lora.json").read_text())
    assert settings["real_images"] == 2 and settings["rank"] == 4
    assert all(name.startswith("disc/train_") for name in settings["source_ids"])  # the tiny set's source_file
    assert "cytodiff" in (loras / "disc" / "README.md").read_text()
    written_at = (loras / "disc" / "pytorch_lora_weights.safetensors").stat().st_mtime_ns
    again = run_cli("train-class-loras", "--generator", str(pipeline_dir), "--data", str(tiny_dataset), "--output",
                    str(loras), "--shots", "2", "--steps", "2", "--prompt-template", "a {name} shape")
    assert again.returncode == 0, again.stderr
    # finished classes are kept, not retrained
    assert (loras / "disc" / "pytorch_lora_weights.safetensors").stat().st_mtime_ns == written_at

    out = tmp_path / "synthetic"
    result = run_cli("generate-dataset", "--model", str(pipeline_dir), "--output", str(out), "--class-loras",
                     str(loras), "--classes", "disc,square", "--per-class", "2", "--steps", "3",
                     "--prompt-template", "a {name} shape", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = datasets.load_dataset(str(out), split="train")
    assert [Path(lora).name for lora in rows["lora"]] == ["disc", "disc", "square", "square"]
    row = rows[2]
    generator = Generator.from_pretrained(pipeline_dir)
    generator.pipeline.load_lora_weights(row["lora"])
    again = generator.text_to_image(row["prompt"], GenerationSettings(steps=row["steps"], guidance=row["guidance"],
                                                                      seed=row["seed"]))[0]
    assert np.array_equal(np.asarray(again), np.asarray(row["image"].convert("RGB")))
    plain = Generator.from_pretrained(pipeline_dir).text_to_image(row["prompt"], GenerationSettings(
        steps=row["steps"], guidance=row["guidance"], seed=row["seed"]))[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(again))  # the LoRA changed the image


def test_per_class_sampling_draws_each_class_with_its_own_lora_on_top_of_a_loaded_one(pipeline_dir, shapes,
                                                                                       tmp_path):
    """The fidelity benchmarks' sampler: a class with a LoRA is drawn as the pipeline with that LoRA loaded would
    draw it, the other classes and the generator itself stay as they were, and a LoRA already loaded stays on
    (or, with replace_loaded, makes way for the class's own)."""
    from magic.evaluation.fidelity import generate_per_class
    from magic.generation.class_loras import find_class_loras

    images, prompts = shapes
    for name, seed in (("disc", 3), ("base", 4)):
        clone = Generator.from_pretrained(pipeline_dir)
        train_denoiser(clone.pipeline, images, prompts, DenoiserTrainConfig(method="lora", lora_rank=4, steps=3,
                                                                            batch_size=4, lr=5e-2, seed=seed))
        save_lora(clone.pipeline, tmp_path / name)
    loras = find_class_loras(tmp_path, ["disc", "square"])
    assert loras == {"disc": tmp_path / "disc"}

    def alone(lora_folders: list[Path], prompt: str) -> list:
        generator = Generator.from_pretrained(pipeline_dir)
        for i, folder in enumerate(lora_folders):
            load_lora(generator.pipeline, folder, adapter_name=f"lora-{i}")
        if lora_folders:
            generator.pipeline.set_adapters([f"lora-{i}" for i in range(len(lora_folders))])
        return generator.text_to_image(prompt, FAST, num_images=2)

    generator = Generator.from_pretrained(pipeline_dir)
    drawn, labels = generate_per_class(generator, ["disc", "square"], "a {name} shape", 2, FAST, class_loras=loras)
    assert labels == [0, 0, 1, 1]
    assert _same(drawn[:2], alone([tmp_path / "disc"], "a disc shape"))
    assert not _same(drawn[:2], alone([], "a disc shape"))
    assert _same(drawn[2:], alone([], "a square shape"))
    assert _same(generator.text_to_image("a disc shape", FAST, num_images=2), alone([], "a disc shape"))

    load_lora(generator.pipeline, tmp_path / "base")
    stacked, _ = generate_per_class(generator, ["disc", "square"], "a {name} shape", 2, FAST, class_loras=loras)
    assert _same(stacked[:2], alone([tmp_path / "base", tmp_path / "disc"], "a disc shape"))
    assert _same(stacked[2:], alone([tmp_path / "base"], "a square shape"))
    replaced, _ = generate_per_class(generator, ["disc", "square"], "a {name} shape", 2, FAST, class_loras=loras,
                                     replace_loaded=True)
    assert _same(replaced[:2], drawn[:2])  # the class's own LoRA alone
    assert _same(replaced[2:], stacked[2:])  # the loaded LoRA still draws the others
    assert _same(generator.text_to_image("a square shape", FAST, num_images=2), stacked[2:])
    with pytest.raises(ValueError, match="not among the classes"):
        generate_per_class(generator, ["square"], "a {name} shape", 1, FAST, class_loras=loras)
    with pytest.raises(ValueError, match="none of the classes"):
        find_class_loras(tmp_path, ["cross"])
    with pytest.raises(FileNotFoundError, match="not a folder of class LoRAs"):
        find_class_loras(tmp_path / "missing", ["disc"])


def test_generate_dataset_draws_classes_with_their_own_lora_and_the_rest_with_the_loaded_one(pipeline_dir, shapes,
                                                                                             tmp_path):
    """generate-dataset --lora L --class-loras FOLDER: a class with a LoRA in FOLDER is drawn with it on top of L
    (or, with --class-loras-replace, instead of it), every other class with L alone; each row says which. The
    folder, exported to float16 as weights/ embeds it, keeps its index and draws the same images within a grey
    level or two."""
    import datasets

    from magic.generation.class_loras import export_class_loras, find_class_loras, write_class_loras_index
    from magic.hub import CLASS_LORAS_INDEX
    from tests.test_cli import run_cli

    images, prompts = shapes
    for name, seed in (("disc", 3), ("base", 4)):
        clone = Generator.from_pretrained(pipeline_dir)
        train_denoiser(clone.pipeline, images, prompts, DenoiserTrainConfig(method="lora", lora_rank=4, steps=3,
                                                                            batch_size=4, lr=5e-2, seed=seed))
        save_lora(clone.pipeline, tmp_path / ("loras" if name == "disc" else "") / name)
    write_class_loras_index(tmp_path / "loras", str(pipeline_dir), "a {name} shape")
    common = ["--model", str(pipeline_dir), "--classes", "disc,square", "--per-class", "2", "--steps", "3",
              "--prompt-template", "a {name} shape", "--device", "cpu", "--lora", str(tmp_path / "base"),
              "--class-loras", str(tmp_path / "loras")]
    rows = {}
    for flags in ((), ("--class-loras-replace",)):
        out = tmp_path / f"out{len(flags)}"
        result = run_cli("generate-dataset", "--output", str(out), *common, *flags)
        assert result.returncode == 0, result.stderr
        rows[bool(flags)] = datasets.load_dataset(str(out), split="train")
    stacked, replaced = rows[False], rows[True]
    base, disc = tmp_path / "base", tmp_path / "loras" / "disc"
    assert stacked["lora"] == [f"{base} + {disc}"] * 2 + [str(base)] * 2
    assert replaced["lora"] == [str(disc)] * 2 + [str(base)] * 2

    def drawn_by(folders: list[Path], row) -> np.ndarray:
        generator = Generator.from_pretrained(pipeline_dir)
        for i, folder in enumerate(folders):
            load_lora(generator.pipeline, folder, adapter_name=f"lora-{i}")
        generator.pipeline.set_adapters([f"lora-{i}" for i in range(len(folders))])
        settings = GenerationSettings(steps=row["steps"], guidance=row["guidance"], seed=row["seed"])
        return np.asarray(generator.text_to_image(row["prompt"], settings)[0])

    def pixels(row) -> np.ndarray:
        return np.asarray(row["image"].convert("RGB"))

    assert np.array_equal(pixels(stacked[0]), drawn_by([base, disc], stacked[0]))
    assert np.array_equal(pixels(replaced[0]), drawn_by([disc], replaced[0]))
    assert np.array_equal(pixels(stacked[2]), drawn_by([base], stacked[2]))
    assert np.array_equal(pixels(replaced[2]), pixels(stacked[2]))  # the other class is untouched by the flag
    bad = run_cli("generate-dataset", "--output", str(tmp_path / "bad"), *common[:-4], "--class-loras-replace")
    assert bad.returncode == 2 and "give both" in bad.stderr

    exported = export_class_loras(tmp_path / "loras", tmp_path / "exported")
    index = json.loads((exported / CLASS_LORAS_INDEX).read_text())
    assert index["classes"] == ["disc"] and index["prompt_template"] == "a {name} shape"
    assert "disc" in (exported / "README.md").read_text()
    assert find_class_loras(exported, ["disc", "square"]) == {"disc": exported / "disc"}
    half = drawn_by([exported / "disc"], replaced[0]).astype(int)
    assert np.abs(half - pixels(replaced[0]).astype(int)).max() <= 2
    with pytest.raises(FileNotFoundError, match="holds no class LoRA"):
        export_class_loras(tmp_path / "base", tmp_path / "nothing")


def test_class_loras_refuse_a_class_without_real_images(pipeline_dir, tiny_dataset, tmp_path):
    from magic.data import load_image_dataset
    from magic.generation.class_loras import ClassLoRAConfig, train_class_loras

    with pytest.raises(ValueError, match="No real image of \\['blob'\\]"):
        train_class_loras(Generator.from_pretrained(pipeline_dir), load_image_dataset(tiny_dataset, split="train"),
                          tmp_path, ClassLoRAConfig(steps=1), "a {name} shape", classes=["blob"])


def json_line(stdout: str) -> dict:
    import json

    return json.loads(stdout.strip().splitlines()[-1])


def test_train_generator_cli_builds_a_loadable_pipeline_with_card(tiny_dataset, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "trained-sd"
    result = run_cli("train-generator", "--data", str(tiny_dataset), "--output", str(out), "--image-size", "32",
                     "--text-encoder", "random-tiny", "--vae-steps", "2", "--unet-steps", "2", "--batch-size", "4",
                     "--device", "cpu", "--prompt-template", "a {name} shape", "--balance", "sampler")
    assert result.returncode == 0, result.stderr
    assert (out / "model_index.json").is_file() and not list(out.rglob("*.bin"))
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "a disc shape" in card
    assert "'balance': 'sampler'" in card  # the card records how the batches were drawn
    images = Generator.from_pretrained(out).text_to_image("a disc shape", FAST)
    assert images[0].size == (32, 32)


def test_train_generator_continues_a_saved_vae_and_unet(pipeline_dir, tiny_dataset, tmp_path):
    from dataclasses import replace

    from magic.data import load_image_dataset
    from magic.generation.recipe import train_generator
    from magic.generation.vae import VAETrainConfig

    data = load_image_dataset(tiny_dataset, split="train")
    common = dict(dataset=data, sizes=TINY, vae_config=VAETrainConfig(steps=1), prompt_template="a {name} shape",
                  vae_from=pipeline_dir, unet_from=pipeline_dir)
    copied = train_generator(output=tmp_path / "copied", unet_config=DenoiserTrainConfig(steps=0), **common)
    assert _same(Generator.from_pretrained(pipeline_dir).text_to_image("a disc shape", FAST),
                 Generator.from_pretrained(copied).text_to_image("a disc shape", FAST))
    continued = train_generator(output=tmp_path / "continued", **common,
                                unet_config=DenoiserTrainConfig(steps=2, batch_size=4, lr=1e-4, warmup_steps=0))
    start, after = (Generator.from_pretrained(f).pipeline.unet.state_dict() for f in (pipeline_dir, continued))
    fresh = build_pipeline(TINY, seed=5).unet.state_dict()
    moved = sum(float((after[k] - start[k]).norm()) for k in start)
    assert 0 < moved < 0.1 * sum(float((fresh[k] - start[k]).norm()) for k in start)  # continued, not restarted
    assert "started from the UNet of" in (continued / "README.md").read_text()
    other = tmp_path / "other-latents"
    build_pipeline(replace(TINY, latent_channels=4)).save_pretrained(other)
    with pytest.raises(ValueError, match="does not fit this pipeline"):
        train_generator(output=tmp_path / "bad", unet_config=DenoiserTrainConfig(steps=0),
                        **{**common, "unet_from": other})


def test_class_balanced_denoiser_batches_draw_each_prompt_equally_often(pipeline_dir, shapes):
    from magic.generation.train import sampling_probabilities

    prompts = ["a disc shape"] * 6 + ["a square shape"] * 2
    probabilities = sampling_probabilities(prompts, "sampler")
    assert probabilities[:6].sum() == pytest.approx(0.5) and probabilities[6:].sum() == pytest.approx(0.5)
    assert np.allclose(sampling_probabilities(prompts, "sqrt-sampler")[[0, 6]] / (6 ** -0.5, 2 ** -0.5),
                       sampling_probabilities(prompts, "sqrt-sampler")[0] / 6 ** -0.5)
    assert sampling_probabilities(prompts, "none") is None
    with pytest.raises(ValueError, match="balance must be one of"):
        DenoiserTrainConfig(balance="oversample")

    images, _ = shapes
    trained = {}
    for balance in ("none", "sampler"):
        generator = Generator.from_pretrained(pipeline_dir)
        train_denoiser(generator.pipeline, images, prompts, DenoiserTrainConfig(steps=2, batch_size=4,
                                                                                warmup_steps=0, balance=balance))
        trained[balance] = generator.pipeline.unet.state_dict()
    assert any(not torch.equal(trained["none"][k], trained["sampler"][k]) for k in trained["none"])  # other batches


def test_perceptual_loss_is_zero_for_identical_images_and_positive_otherwise():
    from magic.generation.vae import PerceptualLoss

    loss = PerceptualLoss()
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(loss(a, a)) == 0.0 and float(loss(a, b)) > 0.0


def test_domain_perceptual_loss_compares_a_classifiers_features_and_class_probabilities(tiny_classifier_dir):
    from magic.generation.vae import PerceptualLoss

    loss = PerceptualLoss(str(tiny_classifier_dir))
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    same_features, same_kl = loss.terms(a, a, with_classes=True)
    assert float(same_features) == 0.0 and abs(float(same_kl)) < 1e-6
    b.requires_grad_(True)
    features, kl = loss.terms(b, a, with_classes=True)
    assert features.item() > 0.0 and kl.item() > 0.0
    (features + kl).backward()
    assert b.grad is not None and b.grad.abs().sum() > 0  # the reconstruction side carries the gradient


def test_class_consistency_without_a_classifier_is_refused_before_training(pipeline_dir, shapes):
    from diffusers import AutoencoderKL

    from magic.generation.vae import VAETrainConfig, train_vae

    vae = AutoencoderKL.from_pretrained(pipeline_dir / "vae")
    with pytest.raises(ValueError, match="needs a domain classifier"):
        train_vae(vae, shapes[0], VAETrainConfig(steps=1, batch_size=2, consistency_weight=1.0))


def test_patch_discriminator_gives_one_logit_per_patch_and_hinge_loss_separates_real_from_fake():
    from magic.generation.vae import PatchDiscriminator, hinge_discriminator_loss

    logits = PatchDiscriminator(layers=2)(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert logits.shape == (3, 1, 14, 14)  # 34-pixel patches
    certain, wrong = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert hinge_discriminator_loss(certain, wrong).item() == 0.0
    assert hinge_discriminator_loss(wrong, certain).item() == 6.0
    with pytest.raises(ValueError, match="at least 1"):
        PatchDiscriminator(layers=0)


def test_adversarial_vae_training_starts_the_discriminator_at_its_step_and_balances_its_weight(pipeline_dir, shapes):
    from diffusers import AutoencoderKL

    from magic.generation.vae import VAETrainConfig, train_vae

    vae = AutoencoderKL.from_pretrained(pipeline_dir / "vae")
    before = {name: value.clone() for name, value in vae.state_dict().items()}
    history = train_vae(vae, shapes[0], VAETrainConfig(steps=3, batch_size=2, adversarial_weight=0.5,
                                                       adversarial_start=1, perceptual_weight=0.0, warmup_steps=1))
    assert "discriminator_loss" not in history[0]  # warm start: reconstruction only
    for record in history[1:]:
        assert math.isfinite(record["discriminator_loss"]) and record["adversarial_scale"] >= 0.0
        assert math.isfinite(record["generator_loss"])
    assert any(not torch.equal(before[name], value) for name, value in vae.state_dict().items())
    with pytest.raises(ValueError, match="adversarial_weight must be >= 0"):
        train_vae(vae, shapes[0], VAETrainConfig(steps=1, batch_size=2, adversarial_weight=-1.0))


def test_tune_decoder_with_an_adversarial_term_reports_it(pipeline_dir, tiny_dataset, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "tuned-gan"
    result = run_cli("tune-decoder", "--generator", str(pipeline_dir), "--data", str(tiny_dataset), "--output",
                     str(out), "--steps", "2", "--batch-size", "2", "--device", "cpu", "--perceptual-weight", "0",
                     "--adversarial-weight", "0.5", "--adversarial-start", "0")
    assert result.returncode == 0, result.stderr
    summary = json_line(result.stdout)
    assert summary["adversarial_weight"] == 0.5 and summary["adversarial_start"] == 0
    Generator.from_pretrained(out).text_to_image("a disc shape", FAST)


def test_tune_decoder_with_class_consistency_changes_only_the_decoder(pipeline_dir, tiny_dataset,
                                                                      tiny_classifier_dir, tmp_path):
    from diffusers import AutoencoderKL

    from tests.test_cli import run_cli

    out = tmp_path / "tuned"
    result = run_cli("tune-decoder", "--generator", str(pipeline_dir), "--data", str(tiny_dataset), "--output",
                     str(out), "--steps", "3", "--batch-size", "4", "--device", "cpu",
                     "--perceptual-network", str(tiny_classifier_dir), "--consistency-weight", "1.0")
    assert result.returncode == 0, result.stderr
    before, after = (AutoencoderKL.from_pretrained(folder / "vae").state_dict() for folder in (pipeline_dir, out))
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith(("decoder.", "post_quant_conv.")) for name in changed)
    assert json_line(result.stdout)["consistency_weight"] == 1.0
    Generator.from_pretrained(out).text_to_image("a disc shape", FAST)  # still a working pipeline


def test_export_without_text_encoder_uses_the_wheels_minilm_and_gives_identical_images(tmp_path):
    import torch

    from magic.generation import GeneratorInfo
    from magic.generation.generator import export_pipeline

    sizes = TinySDConfig(image_size=32, vae_channels=(32, 32), unet_channels=(32, 64), layers_per_block=1,
                         max_prompt_tokens=16)  # the real MiniLM text encoder
    build_pipeline(sizes).save_pretrained(tmp_path / "run")
    GeneratorInfo(label_names=["ig"], prompt_template="a {name} cell", max_prompt_tokens=16).save(tmp_path / "run")
    exported = export_pipeline(tmp_path / "run", tmp_path / "embedded", dtype=torch.float32,
                               include_text_encoder=False)
    assert not (exported / "text_encoder").exists()
    assert GeneratorInfo.load(exported).text_encoder == "packaged:minilm"
    small = export_pipeline(tmp_path / "run", tmp_path / "fp16", include_text_encoder=False)
    unet_bytes = sum(p.stat().st_size for p in (small / "unet").glob("*.safetensors"))
    assert unet_bytes < 0.6 * sum(p.stat().st_size for p in (exported / "unet").glob("*.safetensors"))
    original, embedded = Generator.from_pretrained(tmp_path / "run"), Generator.from_pretrained(exported)
    assert embedded.info.label_names == ["ig"]
    assert _same(original.text_to_image("a ig cell", FAST), embedded.text_to_image("a ig cell", FAST))


def test_concurrent_callers_get_the_same_images_as_sequential_ones(pipeline_dir):
    """A web app calls one Generator from several worker threads; the pipeline's sampling state must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    generator = Generator.from_pretrained(pipeline_dir)
    jobs = [("a disc shape", GenerationSettings(steps=3 + i % 3, guidance=3.0, seed=i)) for i in range(8)]
    expected = [generator.text_to_image(prompt, settings)[0] for prompt, settings in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda job: generator.text_to_image(*job)[0], jobs))
    assert _same(got, expected)


@pytest.fixture
def labelled_pipeline_dir(pipeline_dir, tmp_path):
    """The tiny pipeline with magic_generator.json naming the tiny dataset's classes."""
    import shutil

    from magic.generation import GeneratorInfo
    from tests.conftest import TINY_CLASSES

    folder = tmp_path / "labelled-sd"
    shutil.copytree(pipeline_dir, folder)
    GeneratorInfo(label_names=list(TINY_CLASSES), prompt_template="a {name} shape").save(folder)
    return folder


def test_text_to_latents_decode_to_the_images_text_to_image_draws(pipeline_dir):
    generator = Generator.from_pretrained(pipeline_dir)
    latents = generator.text_to_latents("a disc shape", FAST, num_images=2)
    vae = generator.pipeline.vae
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    images = generator.pipeline.image_processor.postprocess(decoded, output_type="pil")
    assert _same(images, generator.text_to_image("a disc shape", FAST, num_images=2))


def test_align_decoder_changes_only_the_decoder_and_reports_the_guides_term(labelled_pipeline_dir, tiny_dataset,
                                                                            tiny_classifier_dir, tmp_path):
    from diffusers import AutoencoderKL

    from tests.test_cli import run_cli

    out = tmp_path / "aligned"
    result = run_cli("align-decoder", "--generator", str(labelled_pipeline_dir), "--data", str(tiny_dataset),
                     "--output", str(out), "--guides", str(tiny_classifier_dir), "--samples-per-class", "2",
                     "--sample-steps", "2", "--steps", "3", "--batch-size", "4", "--real-batch-size", "4",
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    before, after = (AutoencoderKL.from_pretrained(folder / "vae").state_dict()
                     for folder in (labelled_pipeline_dir, out))
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith(("decoder.", "post_quant_conv.")) for name in changed)
    final = json_line(result.stdout)["final"]
    assert final["class"] > 0 and 0.0 <= final["guide_accuracy"] <= 1.0
    Generator.from_pretrained(out).text_to_image("a disc shape", FAST)  # still a working pipeline


def test_align_decoder_refuses_a_missing_guide_bad_guidance_and_a_guide_of_other_classes(labelled_pipeline_dir,
                                                                                         tiny_classifier_dir,
                                                                                         tmp_path):
    import shutil

    from magic.classifiers import load_classifier
    from magic.generation import GeneratorInfo
    from magic.generation.decoder_alignment import DecoderAlignmentConfig, align_decoder

    with pytest.raises(ValueError, match="needs `guides`"):
        DecoderAlignmentConfig()
    with pytest.raises(ValueError, match="comma-separated"):
        DecoderAlignmentConfig(guides=str(tiny_classifier_dir), guidance="five")
    folder = tmp_path / "other"
    shutil.copytree(labelled_pipeline_dir, folder)
    GeneratorInfo(label_names=["disc", "hexagon"], prompt_template="a {name} shape").save(folder)
    assert "hexagon" not in load_classifier(tiny_classifier_dir).label_names
    with pytest.raises(ValueError, match="does not know the generator's classes"):
        align_decoder(Generator.from_pretrained(folder), [], DecoderAlignmentConfig(guides=str(tiny_classifier_dir)))


def test_synthetic_to_real_trains_on_generated_images_only_and_tests_on_the_real_split(labelled_pipeline_dir,
                                                                                       tiny_dataset):
    from benchmarks.synthetic_to_real import main

    report = main(["--generator", str(labelled_pipeline_dir), "--data", str(tiny_dataset), "--per-class", "2",
                   "--guidance", "1", "3", "--steps", "2", "--epochs", "1", "--image-size", "32", "--seeds", "0", "1",
                   "--real-reference", "--device", "cpu"])
    synthetic = [arm for arm in report["arms"] if arm["train_on"] == "synthetic"]
    real = [arm for arm in report["arms"] if arm["train_on"] == "real"]
    assert [arm["guidance"] for arm in synthetic] == [1.0, 3.0] and len(real) == 1
    for arm in synthetic + real:
        assert [run["seed"] for run in arm["runs"]] == [0, 1]
        assert all(run["train_images"] == 2 * 3 for run in arm["runs"])  # 2 per class, no real image added
        assert set(arm["runs"][0]["per_class_recall"]) == {"disc", "square", "cross"}
        accuracies = [run["accuracy"] for run in arm["runs"]]
        assert arm["accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
        assert 0.0 <= min(accuracies) <= max(accuracies) <= 1.0


def test_synthetic_to_real_refuses_a_generator_without_the_test_classes(labelled_pipeline_dir, tiny_dataset,
                                                                         tmp_path, capsys):
    import shutil

    from benchmarks.synthetic_to_real import main
    from magic.generation import GeneratorInfo

    folder = tmp_path / "other"
    shutil.copytree(labelled_pipeline_dir, folder)
    GeneratorInfo(label_names=["disc", "hexagon"], prompt_template="a {name} shape").save(folder)
    with pytest.raises(SystemExit):
        main(["--generator", str(folder), "--data", str(tiny_dataset), "--device", "cpu"])
    assert "does not draw the test split's classes ['cross', 'square']" in capsys.readouterr().err
