#!/usr/bin/env bash
# Quick start: sets up and builds dsa, then runs the main job on an embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/release/dsa demo "$@"
