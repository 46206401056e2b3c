// Decode-step lightning indexer: scores of one query (64 heads x 128 dims, FP8) against a key
// cache of 4K/32K/128K tokens, then top-2048. BM_IndexerScores compares the AVX512-BF16 path (on
// CPUs that have it) with the Highway fp32 path, on one thread and on all cores.
// "bytes_per_second" counts key-cache reads only: 128 B of fp8 codes + 4 B of scale per key
// (132 B per token).
//
//   build/<dir>/bench/indexer_topk_bench --benchmark_repetitions=5
//     --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "ops/indexer/indexer.h"
#include "ops/topk/topk.h"

namespace dsa {
namespace {

constexpr int64_t kHeads = 64;
constexpr int64_t kKeyCacheBytesPerToken = kIndexerHeadDim + 4;

struct DecodeStep {
  std::vector<fp8_e4m3> q, keys;
  std::vector<float> weights, key_scales, scores;
  std::vector<int32_t> indices;

  explicit DecodeStep(int64_t depth) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 100.0f);
    auto code = [&] { return float_to_fp8(std::clamp(normal(rng), -448.0f, 448.0f)); };
    q.resize(size_t(kHeads * kIndexerHeadDim));
    for (auto& c : q) c = code();
    keys.resize(size_t(depth * kIndexerHeadDim));
    for (auto& c : keys) c = code();
    weights.resize(size_t(kHeads));
    for (auto& w : weights) w = normal(rng) * 1e-6f;
    key_scales.assign(size_t(depth), 1.0f / 256);
    scores.resize(size_t(depth));
    indices.resize(size_t(kIndexTopk));
  }
  IndexerScoresParams scores_params() {
    const int64_t depth = int64_t(key_scales.size());
    return {.q_codes = q.data(),
            .head_weights = weights.data(),
            .key_codes = keys.data(),
            .key_scales = key_scales.data(),
            .scores = scores.data(),
            .tokens = 1,
            .heads = kHeads,
            .keys = depth,
            .start_pos = depth - 1};
  }
  TopkParams topk_params() {
    return {.scores = scores.data(),
            .indices = indices.data(),
            .rows = 1,
            .cols = int64_t(scores.size()),
            .k = kIndexTopk};
  }
};

void set_counters(benchmark::State& state, int64_t depth, int threads) {
  state.SetBytesProcessed(state.iterations() * depth * kKeyCacheBytesPerToken);
  state.counters["threads"] = threads;
  state.counters["keys/s"] =
      benchmark::Counter(double(state.iterations() * depth), benchmark::Counter::kIsRate);
}

// Args: keys, avx512bf16 (1: best path for this CPU, 0: force the Highway fp32 path), threads
// (0: all cores). With threads = 1 the CPU time is the kernel's cost even on a loaded machine.
void BM_IndexerScores(benchmark::State& state) {
  const int64_t depth = state.range(0);
  ThreadPool pool(int(state.range(2)));
  DecodeStep step(depth);
  IndexerScoresParams params = step.scores_params();
  params.allow_avx512bf16 = state.range(1) != 0;
  for (auto _ : state) {
    indexer_scores(params, pool);
    benchmark::DoNotOptimize(step.scores.data());
  }
  set_counters(state, depth, pool.size());
}

void BM_Topk(benchmark::State& state) {
  const int64_t depth = state.range(0);
  ThreadPool pool(0);
  DecodeStep step(depth);
  indexer_scores(step.scores_params(), pool);
  const TopkParams params = step.topk_params();
  for (auto _ : state) {
    topk_select(params, pool);
    benchmark::DoNotOptimize(step.indices.data());
  }
  set_counters(state, depth, pool.size());
}

void BM_IndexerScoresTopk(benchmark::State& state) {
  const int64_t depth = state.range(0);
  ThreadPool pool(0);
  DecodeStep step(depth);
  const IndexerScoresParams scores = step.scores_params();
  const TopkParams topk = step.topk_params();
  for (auto _ : state) {
    indexer_scores(scores, pool);
    topk_select(topk, pool);
    benchmark::DoNotOptimize(step.indices.data());
  }
  set_counters(state, depth, pool.size());
}

void BM_IndexerScoresReference(benchmark::State& state) {  // baseline, same run
  const int64_t depth = state.range(0);
  DecodeStep step(depth);
  const IndexerScoresParams params = step.scores_params();
  for (auto _ : state) {
    indexer_scores_reference(params);
    benchmark::DoNotOptimize(step.scores.data());
  }
  set_counters(state, depth, 1);
}

BENCHMARK(BM_IndexerScores)
    ->ArgNames({"keys", "avx512bf16", "threads"})
    ->ArgsProduct({{4096, 32768, 131072}, {1, 0}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Topk)
    ->Arg(4096)
    ->Arg(32768)
    ->Arg(131072)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_IndexerScoresTopk)
    ->Arg(4096)
    ->Arg(32768)
    ->Arg(131072)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_IndexerScoresReference)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace dsa

BENCHMARK_MAIN();
