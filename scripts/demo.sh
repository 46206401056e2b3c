#!/usr/bin/env bash
# Quick start: sets up and builds dsa, then runs the main job on an embedded default.
# Until a model runs end to end, the main job generates the tiny DeepSeek-V3.2 checkpoint
# (random weights, the real tensor layout, FP8 block-scaled) and inspects it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/release/dsa init-model --preset tiny --seed 0 --force -o models/tiny
build/release/dsa inspect models/tiny
