#!/usr/bin/env bash
# The libFuzzer campaign of docs/input-limits.md: builds the fuzz targets with clang, ASan and
# UBSan (UBSan reports abort), then runs each from a copy of its seed corpus for a number of
# executions, one target after another, and prints one summary line per target.
#
#   scripts/fuzz_campaign.sh [RUNS] [TARGET...]   RUNS defaults to 10000000; targets to all
#
# MAX_LEN (default 4096) bounds the inputs libFuzzer makes: at the seeds' own sizes (up to 60 KB)
# a run is 10-50 times slower. The deep, wide and large inputs stay covered by the seeds, which
# ctest replays in every build, and by the regression tests of tests/. Each run is niced, so the
# campaign can share the machine with a build.
#
# Logs, grown corpora and any crashing input go to build/fuzz-campaign/<target>/. Exits non-zero
# at the first target that finds a crash, a leak, a timeout or an out-of-memory.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10000000}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  for src in fuzz/*_fuzz.cc; do targets+=("$(basename "$src" .cc)"); done
fi

CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDSA_FUZZ=ON -DDSA_CUDA=OFF -DDSA_BUILD_TESTS=OFF >/dev/null
cmake --build build/fuzz --target "${targets[@]}"

for target in "${targets[@]}"; do
  out=build/fuzz-campaign/$target
  rm -rf "$out"
  mkdir -p "$out/corpus"
  cp -r "fuzz/corpus/$target/." "$out/corpus/"
  start=$(date +%s)
  # -timeout: an input that takes 30 s under ASan is a hang (wall clock: generous, so that a
  # build sharing the machine cannot starve the niced run into a false alarm); -rss_limit_mb and -malloc_limit_mb
  # catch inputs that blow up memory. Leak checking is on (libFuzzer's default with ASan).
  if ! nice -n 19 "build/fuzz/fuzz/$target" -runs="$runs" -max_len="${MAX_LEN:-4096}" -timeout=30 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -artifact_prefix="$out/" -print_final_stats=1 "$out/corpus" \
      >"$out/log.txt" 2>&1; then
    echo "$target: FAILED after $(($(date +%s) - start)) s; see $out/log.txt"
    tail -n 30 "$out/log.txt"
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log.txt")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log.txt")
  cov=$(grep -o 'cov: [0-9]*' "$out/log.txt" | tail -n 1)
  echo "$target: $execs executions in $(($(date +%s) - start)) s ($rate/s), $cov," \
    "corpus $(ls "$out/corpus" | wc -l) inputs, clean"
done
