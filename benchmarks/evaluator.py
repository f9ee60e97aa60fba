"""Benchmark a checklist evaluator against the labels of the real test splits.

    python benchmarks/evaluator.py --evaluator embedded
    python benchmarks/evaluator.py --evaluator "openai:gpt-4o" --per-class 10      # API calls cost money

Every test image of condition C is judged against the checklist of every condition of its catalog. Good agreement:
a high pass rate on C's own items, a low one on the other conditions' items. Prints a table per dataset and writes
one JSON file (default benchmarks/results/evaluator_<backend>.json) with the numbers and the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magic.catalog import load_catalog  # noqa: E402
from magic.data import load_image_dataset  # noqa: E402
from magic.evaluation import load_evaluator  # noqa: E402
from magic.evaluation.agreement import checklist_agreement, format_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluator", default="embedded", help="Evaluator spec (see magic.evaluation.factory).")
    parser.add_argument("--data", nargs="+", default=["../shared/data/pbc=pbc", "../shared/data/ham10000=ham10000"],
                        help="DATASET=CATALOG pairs.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-class", type=int, default=0, help="Judge only this many images per class (0: all).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default).")
    parser.add_argument("--output", default="", help="JSON file (default benchmarks/results/evaluator_NAME.json).")
    parser.add_argument("--write-metrics", default="",
                        help="Also write the results as metrics.json into this model folder and re-render its card.")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    evaluator = load_evaluator(args.evaluator)
    results = []
    for spec in args.data:
        data, _, catalog = spec.partition("=")
        name = Path(data.rstrip("/")).name
        dataset = load_image_dataset(data, split=args.split)
        results.append(checklist_agreement(
            evaluator, dataset, load_catalog(catalog or name), dataset_name=name, split=args.split,
            per_class=args.per_class, batch_size=args.batch_size,
            progress=lambda done, total, name=name: print(f"\r{name}: {done}/{total}", end="", file=sys.stderr)))
        print(file=sys.stderr)
    print(format_table(results))
    document = {
        "evaluator": args.evaluator, "backend": evaluator.backend_id, "split": args.split,
        "per_class": args.per_class, "results": [result.to_dict() for result in results],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    slug = re.sub(r"[^A-Za-z0-9]+", "_", args.evaluator.split("?")[0]).strip("_")
    output = Path(args.output) if args.output else RESULTS / f"evaluator_{slug}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1))
    if args.write_metrics:
        from magic.evaluation.card import write_evaluator_card

        (Path(args.write_metrics) / "metrics.json").write_text(json.dumps(document["results"], indent=1))
        write_evaluator_card(args.write_metrics)
    print(output)


if __name__ == "__main__":
    main()
