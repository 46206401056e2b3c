// MLA decode attention on the CPU: sparse (DSA: H = 128, top-2048 keys of an FP8 cache) and the
// dense absorbed-mode baseline at 4K / 32K / 128K keys over FP8 and bf16 caches.
// FLOP/s counts the useful work 2·H·keys·(576 + 512); bytes/s the cache bytes of the attended
// keys plus q and the output. avx512bf16:1 takes the AVX512-BF16 q·k scores where the CPU has
// them, avx512bf16:0 forces the Highway fp32 path. Run: build/<dir>/bench/mla_bench
// [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "core/float_formats.h"
#include "ops/attention/mla.h"

namespace dsa {
namespace {

constexpr int64_t kHeads = 128;
constexpr int64_t kTopk = 2048;
constexpr LatentDims kDims;  // V3.2: 512 latent + 64 RoPE dims

struct CacheData {
  std::vector<std::byte> bytes;
  LatentCacheView view;
};

// A cache of `tokens` random latent keys, built once per (format, size).
const CacheData& cache(LatentCacheFormat format, int64_t tokens) {
  static std::map<std::pair<int, int64_t>, std::unique_ptr<CacheData>> caches;
  auto& slot = caches[{int(format), tokens}];
  if (!slot) {
    slot = std::make_unique<CacheData>();
    const size_t token_bytes = latent_token_bytes(format, kDims);
    slot->bytes.resize(size_t(tokens) * token_bytes);
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> latent(kDims.latent), rope(kDims.rope);
    for (int64_t t = 0; t < tokens; ++t) {
      for (float& x : latent) x = round_to_bf16(dist(rng));
      for (float& x : rope) x = round_to_bf16(dist(rng));
      pack_latent_token(latent, rope, format, ScaleFormat::kUe8m0,
                        slot->bytes.data() + size_t(t) * token_bytes);
    }
    slot->view = {format, kDims, slot->bytes.data(), tokens};
  }
  return *slot;
}

std::vector<float> queries() {
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> q(size_t(kHeads) * kDims.key());
  for (float& x : q) x = round_to_bf16(dist(rng));
  return q;
}

void set_counters(benchmark::State& state, int64_t keys, LatentCacheFormat format) {
  const double flops = 2.0 * kHeads * double(keys) * (kDims.key() + kDims.latent);
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.SetBytesProcessed(int64_t(state.iterations()) *
                          (keys * int64_t(latent_token_bytes(format, kDims)) +
                           kHeads * (kDims.key() + kDims.latent) * 4));
}

// Args: cache format (0 = FP8, 1 = bf16), threads, avx512bf16.
void BM_SparseMlaDecode(benchmark::State& state) {
  const auto format = LatentCacheFormat(state.range(0));
  const CacheData& data = cache(format, 32768);
  std::vector<int32_t> indices(size_t(data.view.num_tokens));
  std::iota(indices.begin(), indices.end(), 0);
  std::shuffle(indices.begin(), indices.end(), std::mt19937(3));
  indices.resize(kTopk);
  const std::vector<float> q = queries();
  std::vector<float> out(size_t(kHeads) * kDims.latent), lse(kHeads);
  ThreadPool pool(int(state.range(1)));
  SparseMlaParams p{q.data(), data.view, indices.data(), out.data(),         lse.data(),
                    1,        kHeads,    kTopk,          mla_softmax_scale()};
  p.allow_avx512bf16 = state.range(2) != 0;
  for (auto _ : state) {
    sparse_mla(p, pool);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, kTopk, format);
}

// Args: keys, cache format, threads, avx512bf16.
void BM_DenseMlaDecode(benchmark::State& state) {
  const auto format = LatentCacheFormat(state.range(1));
  const CacheData& data = cache(format, state.range(0));
  const std::vector<float> q = queries();
  std::vector<float> out(size_t(kHeads) * kDims.latent), lse(kHeads);
  ThreadPool pool(int(state.range(2)));
  DenseMlaParams p{q.data(), data.view, out.data(), lse.data(), kHeads, mla_softmax_scale()};
  p.allow_avx512bf16 = state.range(3) != 0;
  for (auto _ : state) {
    dense_mla(p, pool);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, state.range(0), format);
}

BENCHMARK(BM_SparseMlaDecode)
    ->ArgNames({"bf16", "threads", "avx512bf16"})
    ->ArgsProduct({{0, 1}, {1, 2}, {1, 0}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DenseMlaDecode)
    ->ArgNames({"keys", "bf16", "threads", "avx512bf16"})
    ->ArgsProduct({{4096, 32768, 131072}, {0, 1}, {1, 2}, {1, 0}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace dsa

BENCHMARK_MAIN();
