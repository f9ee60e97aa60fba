"""The evaluator commands of ``python -m magic``: evaluate, serve-evaluator, train-evaluator, expert-agreement."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..catalog import load_catalog
    from .cache import DEFAULT_CACHE_DIR, VerdictCache
    from .factory import load_evaluator
    from .verdict import Checklist, EvaluationError

    try:
        checklist = Checklist.from_catalog(load_catalog(args.catalog), args.condition, skin_tone=args.skin_tone)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    cache = None if args.no_cache else VerdictCache(Path(args.cache_dir or DEFAULT_CACHE_DIR) / "verdicts.sqlite")
    evaluator = load_evaluator(args.evaluator, cache=cache)
    try:
        verdicts = evaluator.evaluate_batch(list(args.image), checklist)
    except EvaluationError as error:
        print(f"magic evaluate: error: {error}", file=sys.stderr)
        return 3
    if args.json:
        records = [{"image": str(path), **verdict.to_dict()} for path, verdict in zip(args.image, verdicts)]
        print(json.dumps(records[0] if len(records) == 1 else records))
        return 0
    for path, verdict in zip(args.image, verdicts):
        print(f"{path}: {verdict.score}/{len(verdict.scores)} for {checklist.condition_name} "
              f"({verdict.backend} {verdict.backend_version}{', cached' if verdict.cached else ''})")
        for item, score, reason in zip(checklist.items, verdict.scores, verdict.rationales):
            print(f"  [{'x' if score else ' '}] {item}\n        {reason}")
    return 0


def cmd_expert_agreement(args: argparse.Namespace) -> int:
    from .experts import expert_agreement, format_agreement, load_expert_labels
    from .factory import load_evaluator

    labels = load_expert_labels(args.labels)
    result = expert_agreement(load_evaluator(args.evaluator, cache=None), labels, Path(args.labels).parent)
    print(json.dumps(result.to_dict()) if args.json else format_agreement(result))
    return 0


def cmd_serve_evaluator(args: argparse.Namespace) -> int:
    from .factory import load_evaluator
    from .server import serve

    evaluator = load_evaluator(args.model if ":" in args.model and not Path(args.model).exists()
                               else f"embedded:{args.model}")
    print(f"Serving {evaluator.backend_id} as {args.model_name!r} on http://{args.host}:{args.port}/v1 "
          "(POST /v1/chat/completions, GET /v1/models)", file=sys.stderr)
    serve(evaluator, host=args.host, port=args.port, model_name=args.model_name, api_key_env=args.api_key_env or None)
    return 0


def cmd_train_evaluator(args: argparse.Namespace) -> int:
    import torch

    from ..catalog import load_catalog
    from ..cli import dataclass_from_args
    from ..data import load_image_dataset
    from .agreement import checklist_agreement, format_table
    from .card import write_evaluator_card
    from .embedded import EmbeddedEvaluator
    from .embedded_model import ScorerConfig
    from .train_embedded import Domain, EmbeddedTrainConfig, train_embedded_evaluator

    torch.set_num_threads(args.threads) if args.threads else None
    domains = []
    for spec in args.data:
        data, _, catalog = spec.partition("=")
        domains.append(Domain(data, load_catalog(catalog or Path(data.rstrip("/")).name)))
    config = dataclass_from_args(EmbeddedTrainConfig, args)
    scorer, record = train_embedded_evaluator(domains, config, ScorerConfig(image_size=args.image_size),
                                              log=lambda line: print(line, file=sys.stderr))
    output = Path(args.output)
    scorer.save_pretrained(output, dtype=None if args.save_dtype == "float32" else getattr(torch, args.save_dtype))
    results = []
    if args.test_split:
        evaluator = EmbeddedEvaluator.from_pretrained(output)  # the saved (fp16) weights, as users get them
        for domain in domains:
            dataset = load_image_dataset(domain.data, split=args.test_split)
            results.append(checklist_agreement(evaluator, dataset, domain.catalog,
                                               dataset_name=Path(domain.data.rstrip("/")).name, split=args.test_split))
        (output / "metrics.json").write_text(json.dumps([result.to_dict() for result in results], indent=1))
        print(format_table(results), file=sys.stderr)
    write_evaluator_card(output, repo_id=args.repo_id or None)
    print(json.dumps({"output": str(output), **{key: record[key] for key in ("train_seconds", "feature_seconds",
                                                                              "total_seconds")}}))
    return 0


def add_commands(commands, complete: bool = True) -> None:
    """Add the evaluator subcommands to ``python -m magic``'s subparsers (``complete=False``: without
    ``train-evaluator``'s config options, which import its training stack)."""
    from ..cli import add_dataclass_arguments

    ev = commands.add_parser("evaluate", help="Judge images against a condition's checklist (0/1 per item).")
    ev.add_argument("--evaluator", default="embedded",
                    help="embedded[:FOLDER_OR_ID], openai:MODEL[?base_url=...&api_key_env=...], "
                         "transformers:HUB_ID or classifier:FOLDER_OR_ID[+FOLDER_OR_ID...][?levels=...] "
                         "(default: embedded).")
    ev.add_argument("--image", required=True, nargs="+", help="Image file(s).")
    ev.add_argument("--catalog", required=True, help="Catalog name (pbc, ham10000, ...) or a catalog YAML file.")
    ev.add_argument("--condition", required=True, help="Condition id, name or synonym in the catalog.")
    ev.add_argument("--skin-tone", choices=["light", "dark"], default=None,
                    help="Skin-tone wording of the colour item.")
    ev.add_argument("--no-cache", action="store_true", help="Do not read or write the verdict cache.")
    ev.add_argument("--cache-dir", default="", help="Verdict cache folder (default ~/.cache/magic or MAGIC_CACHE_DIR).")
    ev.add_argument("--json", action="store_true", help="Print JSON.")
    ev.set_defaults(func=cmd_evaluate)

    ea = commands.add_parser("expert-agreement", help="Cohen's kappa per checklist item between an evaluator and "
                                                      "expert labels (magic-expert-labels JSON Lines).")
    ea.add_argument("--labels", required=True, help="Expert labels file; image paths are relative to it.")
    ea.add_argument("--evaluator", default="embedded", help="Evaluator spec, as for `evaluate`.")
    ea.add_argument("--json", action="store_true", help="Print JSON (with the per-image pairs).")
    ea.set_defaults(func=cmd_expert_agreement)

    se = commands.add_parser("serve-evaluator", help="Serve an evaluator on an OpenAI-compatible endpoint "
                                                     "(/v1/chat/completions, /v1/models).")
    se.add_argument("--model", default="magic-suite/checklist-evaluator",
                    help="Embedded evaluator folder or id (or any evaluator spec KIND:TARGET).")
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument("--model-name", default="magic-checklist-evaluator", help="The model id the server reports.")
    se.add_argument("--api-key-env", default="", help="Require 'Authorization: Bearer $THIS_VARIABLE'.")
    se.set_defaults(func=cmd_serve_evaluator)

    tr = commands.add_parser("train-evaluator", help="Train the embedded checklist evaluator on labelled datasets.")
    tr.add_argument("--data", nargs="+", required=True,
                    help="DATASET[=CATALOG] pairs, e.g. ../shared/data/pbc=pbc ../shared/data/ham10000=ham10000.")
    tr.add_argument("--output", required=True)
    tr.add_argument("--image-size", type=int, default=96)
    tr.add_argument("--test-split", default="test", help="Measure agreement on this split ('' to skip).")
    tr.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    tr.add_argument("--repo-id", default="")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default).")
    if complete:
        from .train_embedded import EmbeddedTrainConfig

        add_dataclass_arguments(tr, EmbeddedTrainConfig)
    tr.set_defaults(func=cmd_train_evaluator)
