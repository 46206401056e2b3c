#!/usr/bin/env bash
# DeepSeek's two-stage DSA recipe at small scale, from an empty Debian 12 machine
# (docs/dsa-recipe.md): pre-trains the dense model if it is not there (scripts/pretrain.sh), then
#   1. the dense warm-up: only the lightning indexers train, by KL to the dense attention;
#   2. sparse training: top-k attention on, the indexer on the selected set, the rest on LM loss;
#   3. dsa eval of the four models (dense; sparse before the warm-up; after it; after sparse
#      training), of a dense control trained as long as the sparse stage, a k sweep and
#      dsa bench, into models/recipe/ and docs/images/.
# Resumable: each stage continues from its last checkpoint when run again.
#
#   scripts/dsa_recipe.sh                         everything
#   WARMUP_STEPS=10 SPARSE_STEPS=10 scripts/dsa_recipe.sh   a quick smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

SEQ=${SEQ:-2048}
WARMUP_STEPS=${WARMUP_STEPS:-150}
SPARSE_STEPS=${SPARSE_STEPS:-100}
THREADS=${THREADS:-$(nproc)}
DENSE=models/dense-small
WARM=models/warmup-small
SPARSE=models/dsa-small
OUT=models/recipe
dsa=build/release/dsa

[ -f "$DENSE/trainer/state.json" ] && [ -x "$dsa" ] || scripts/pretrain.sh
scripts/setup.sh --only dsa
mkdir -p "$OUT"

# A stage is resumed when its folder holds a checkpoint.
resume() { [ -f "$1/trainer/state.json" ] && echo --resume || true; }

# 1. Dense warm-up (DeepSeek: lr 1e-3, 1000 steps; here the same lr over fewer, shorter steps).
$dsa train --stage warmup --init "$DENSE" --data data/tokens -o "$WARM" \
  --steps "$WARMUP_STEPS" --seq "$SEQ" --batch 2 --grad-accum 2 --lr 1e-3 --min-lr 1e-4 \
  --warmup 5 --weight-decay 0 --clip 1.0 --seed 2 -t "$THREADS" --save-every 10 \
  --eval-every 10 --log "$WARM.jsonl" --plot "$WARM.svg" $(resume "$WARM")

# 2. Sparse training at k = index_topk = 128 of 2048 (1/16): the pre-training's last learning
#    rate, decaying by 10x.
$dsa train --stage sparse --init "$WARM" --data data/tokens -o "$SPARSE" \
  --steps "$SPARSE_STEPS" --seq "$SEQ" --batch 2 --grad-accum 4 --lr 2e-4 --min-lr 2e-5 \
  --warmup 5 --weight-decay 0.1 --clip 1.0 --seed 3 -t "$THREADS" --save-every 10 \
  --eval-every 10 --log "$SPARSE.jsonl" --plot "$SPARSE.svg" $(resume "$SPARSE")

# The control for sparse training: the dense model trained for the same 100 steps on the same
# batches with the same learning rate, dense attention throughout.
CONTROL=models/dense-cont
$dsa train --stage dense --init "$DENSE" --data data/tokens -o "$CONTROL" \
  --steps "$SPARSE_STEPS" --seq "$SEQ" --batch 2 --grad-accum 4 --lr 2e-4 --min-lr 2e-5 \
  --warmup 5 --weight-decay 0.1 --clip 1.0 --seed 3 -t "$THREADS" --save-every 50 \
  --eval-every 50 --log "$CONTROL.jsonl" $(resume "$CONTROL")

# 3. The four models, and the control. Retrieval: lengths 256 .. 2048, five depths, 4 samples a cell.
eval_model() {  # name, folder, modes
  $dsa eval -m "$2" --data data/tokens -c "$SEQ" --attention "$3" -t "$THREADS" \
    --json "$OUT/$1.json" --heatmap "$OUT/heat-$1" > "$OUT/$1.txt"
  echo "eval $1: $OUT/$1.txt"
}
eval_model dense "$DENSE" dense
eval_model before-warmup "$DENSE" sparse
eval_model after-warmup "$WARM" sparse
eval_model after-sparse "$SPARSE" sparse,dense
$dsa eval -m "$CONTROL" --data data/tokens -c "$SEQ" --attention dense --tasks ppl \
  -t "$THREADS" --json "$OUT/dense-continued.json" > "$OUT/dense-continued.txt"

# The k sweep (k/L = 1/4, 1/8, 1/16, 1/32 at L = 2048): perplexity and indexer recall of the
# warmed-up and the sparse-trained model at each k.
for m in "$WARM" "$SPARSE"; do
  name=$(basename "$m")
  $dsa eval -m "$m" --data data/tokens -c "$SEQ" --topk 512,256,128,64 -t "$THREADS" \
    --json "$OUT/ksweep-$name.json" --plot "$OUT/ksweep-$name.svg" > "$OUT/ksweep-$name.txt"
done

# Cost per token against depth, sparse and dense, for this model (decode and a 512-token prefill;
# depth 3552 + 512 + 32 = 4096, max_position_embeddings).
$dsa bench -m "$SPARSE" -d 0,1024,2048,3552 -p 512 -n 32 -r 3 --attention sparse,dense \
  -t "$THREADS" --plot docs/images/dsa-small-cost.svg > "$OUT/bench.txt"
echo "results in $OUT; docs/dsa-recipe.md says what they mean"
