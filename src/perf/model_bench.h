// The whole-model benchmark behind `dsa bench -m DIR`, after llama-bench: for each cache depth d
// and attention mode,
//   pp  prompt processing: one forward call of n_prompt new tokens at positions d .. d+n_prompt-1
//   tg  text generation: n_gen decode steps, one token each, at positions d .. d+n_gen-1
// each run once untimed (warm-up) and then `runs` times, the cache truncated back to d before
// every run. Token ids are fixed (speed does not depend on them; nothing is sampled).
//
// Reaching depth d:
//   real prefill (default)  the cache of each mode is filled once to the largest depth with that
//                           mode's forward pass (chunks of fill_chunk tokens); depths then run
//                           from the largest down, so the positions below d always hold the real
//                           prefix (the runs only ever overwrite positions >= d).
//   synthetic               no model compute: positions 0 .. max depth - 1 of every layer get
//                           random but valid entries (FP8 latents packed from random bf16 values
//                           with ue8m0 scales, indexer keys of random non-NaN e4m3 codes with
//                           power-of-two scales), the same for every mode. Attention does the same
//                           work over them as over real keys; only which keys top-k picks differs.
// The cache holds max depth + n_prompt + n_gen positions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "perf/timing.h"

namespace dsa {

enum class ModelBenchTest { kPrompt, kGenerate };
std::string_view model_bench_test_name(ModelBenchTest test);  // "pp", "tg"

struct ModelBenchConfig {
  std::vector<int64_t> depths;  // cache positions before each test, each >= 0
  int64_t n_prompt = 512;       // pp tokens (0: no pp test)
  int64_t n_gen = 128;          // tg tokens (0: no tg test)
  int runs = 3;                 // timed runs per test, after one warm-up run
  std::vector<AttentionMode> modes = {AttentionMode::kSparse, AttentionMode::kDense};
  bool synthetic_cache = false;
  int64_t fill_chunk = 512;  // prefill chunk when reaching a depth by real prefill
  uint64_t seed = 0;         // synthetic cache contents
};

// Throws dsa::Error naming the field: no depths or a negative one, n_prompt or n_gen negative or
// both 0, runs or fill_chunk < 1, no modes or a repeated one, sparse on a model without an
// indexer, or a cache (max depth + n_prompt + n_gen) beyond max_position_embeddings.
void validate(const ModelBenchConfig& config, const ModelConfig& model);

// Positions the benchmark's cache holds.
int64_t model_bench_capacity(const ModelBenchConfig& config);

struct ModelBenchResult {
  AttentionMode mode = AttentionMode::kSparse;
  int64_t depth = 0;
  ModelBenchTest test = ModelBenchTest::kPrompt;
  int64_t n_tokens = 0;             // tokens per run
  std::vector<double> run_seconds;  // wall time of each timed run

  TimingStats seconds_per_token() const;  // over the runs
  TimingStats tokens_per_second() const;  // n_tokens / run time, over the runs
  std::string test_label() const;         // "pp512 @ d4096", as llama-bench names its tests
};

// Called while a depth is reached by real prefill: `label` names the fill ("fill sparse"),
// `done` of `total` tokens are in the cache (0 first, total last).
using FillProgress = std::function<void(const std::string& label, int64_t done, int64_t total)>;

// Runs every (depth, mode, test) and returns the records sorted by mode (in config order), depth
// (ascending), then pp before tg.
std::vector<ModelBenchResult> run_model_bench(const Model& model, const ModelBenchConfig& config,
                                              ThreadPool& pool, const FillProgress& progress = {});

// Fills positions [0, depth) of every layer of an empty cache of `model` with random valid
// entries (see above) and advances it to `depth` (at most its capacity).
void fill_synthetic_cache(const ModelConfig& model, KvCache& cache, int64_t depth, uint64_t seed,
                          ThreadPool& pool);

// This process's peak resident memory (VmHWM of /proc/self/status) in bytes; 0 if unknown.
uint64_t peak_rss_bytes();
// The 1-minute load average (/proc/loadavg); a negative value if unknown.
double load_average_1m();

}  // namespace dsa
