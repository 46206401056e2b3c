#!/usr/bin/env bash
# Pre-trains the dense "V3.1" of our DSA recipe from an empty Debian 12 machine: installs and
# builds dsa, installs the corpus (scripts/corpus.sh: Debian packages), trains the tokenizer,
# builds the token data set, then runs `dsa train --stage dense` on configs/dsa-small.json with
# context 2048. Everything lands in data/ (corpus, tokenizer, tokens) and models/dense-small.
# Resumable: run it again after an interruption and training continues from its last checkpoint.
#
#   scripts/pretrain.sh                # the full run (docs/training.md)
#   STEPS=20 SEQ=256 scripts/pretrain.sh   # a quick smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-300}
SEQ=${SEQ:-2048}
BATCH=${BATCH:-2}
ACCUM=${ACCUM:-4}
LR=${LR:-2e-3}
OUT=${OUT:-models/dense-small}
THREADS=${THREADS:-$(nproc)}

scripts/setup.sh --only dsa
[ -f data/tokenizer.json ] || scripts/corpus.sh --tokenizer
[ -f data/tokens/data.json ] || build/release/dsa data build -i data/corpus \
  --tokenizer data/tokenizer.json -o data/tokens --heldout-fraction 0.03 \
  --synthetic-ratio 0.2 --synthetic-lengths 512,1024,2048

resume=()
[ -f "$OUT/trainer/state.json" ] && resume=(--resume)
build/release/dsa train --stage dense --init configs/dsa-small.json --data data/tokens -o "$OUT" \
  --steps "$STEPS" --seq "$SEQ" --batch "$BATCH" --grad-accum "$ACCUM" \
  --lr "$LR" --min-lr "$(awk "BEGIN { print $LR / 10 }")" --warmup $((STEPS / 15)) \
  --weight-decay 0.1 --clip 1.0 --seed 1 -t "$THREADS" --save-every 10 --eval-every 10 \
  --log "$OUT.jsonl" --plot "$OUT.svg" "${resume[@]}"
build/release/dsa run -m "$OUT" -p "In the beginning" -n 64 --temp 0.8 --seed 1
