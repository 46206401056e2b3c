#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite: the Release build, then the Debug build with
# AddressSanitizer and UndefinedBehaviorSanitizer. Extra arguments go to ctest (e.g. -R safetensors).
# Suites labelled `slow` run only with DSA_SLOW_TESTS=1; `gpu` tests skip themselves without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --sanitize

exclude=()
[ "${DSA_SLOW_TESTS:-0}" = 1 ] || exclude=(-LE slow)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for build in release sanitize; do
  echo "== tests: build/$build"
  ctest --test-dir "build/$build" --output-on-failure -j "$(nproc)" "${exclude[@]}" "$@"
done
