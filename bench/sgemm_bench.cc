// The training products' single-threaded sgemm, fp32 against bf16 compute (ops/gemm/sgemm.h),
// on the calls the training ops make for the `small` preset (hidden 512, MLP 1536, experts 256,
// 256-row blocks): the forward x·Wᵀ (NT), dx = dy·W (NN) and dW += dyᵀ·x (TN). The result
// decides whether training runs its products in bf16 (docs/training-speed.md).
// Run: build/<dir>/bench/sgemm_bench [--benchmark_filter=...]; compare CPU time on a shared
// machine (the whole call runs on the timed thread).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "ops/gemm/sgemm.h"

namespace dsa {
namespace {

// Args: precision (0 fp32, 1 bf16), trans_a, trans_b, M, N, K.
void BM_Sgemm(benchmark::State& state) {
  const MatmulPrecision precision =
      state.range(0) == 1 ? MatmulPrecision::kBf16 : MatmulPrecision::kFp32;
  const bool trans_a = state.range(1) != 0, trans_b = state.range(2) != 0;
  const int64_t m = state.range(3), n = state.range(4), k = state.range(5);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), c(size_t(m * n));
  for (float& v : a) v = dist(rng);
  for (float& v : b) v = dist(rng);
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  for (auto _ : state) {
    sgemm(precision, trans_a, trans_b, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(),
          n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k),
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
  state.SetLabel(matmul_precision_name(precision));
}

void TrainingShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bf16", "ta", "tb", "M", "N", "K"});
  for (int precision : {0, 1}) {
    // forward: y[256, N] = x[256, K] · W[N, K]ᵀ
    for (auto [n, k] : {std::pair{1536, 512}, {512, 1536}, {256, 512}, {512, 256}}) {
      b->Args({precision, 0, 1, 256, n, k});
    }
    // dx[256, K] = dy[256, N] · W[N, K]
    for (auto [n, k] : {std::pair{1536, 512}, {512, 1536}}) b->Args({precision, 0, 0, 256, k, n});
    // dW rows [128, K] += dy[256, 128]ᵀ · x[256, K]
    for (int k : {512, 1536}) b->Args({precision, 1, 0, 128, k, 256});
    // the LM head's block: logits[256, 2048] = h[256, 512] · W_vocab[2048, 512]ᵀ
    b->Args({precision, 0, 1, 256, 2048, 512});
  }
}

BENCHMARK(BM_Sgemm)->Apply(TrainingShapes)->Unit(benchmark::kMicrosecond)->MeasureProcessCPUTime();

}  // namespace
}  // namespace dsa

BENCHMARK_MAIN();
