// GEMM kernels for the shapes of DeepSeek-V3.2 linears: the Highway dot kernel against OpenBLAS
// sgemm (on fp32 copies of bf16 / FP8 weights), for decode (M = 1..8) and prefill (M = 64..512).
// The measurements decide kBlasMinRows in src/ops/gemm_fast.cc (docs/cpu-kernels.md).
// Run: build/<dir>/bench/gemm_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "ops/gemm/gemm.h"

namespace dsa {
namespace {

// Args: weight dtype (0 F32, 1 BF16, 2 F8_E4M3), kernel (1 dot, 2 BLAS), M, N, K, threads.
// For kernel comparisons on a shared machine, run threads:1 with OPENBLAS_NUM_THREADS=1 and
// compare CPU time (the whole work then runs on the timed thread).
void BM_Gemm(benchmark::State& state) {
  const DType dtype = state.range(0) == 0   ? DType::F32
                      : state.range(0) == 1 ? DType::BF16
                                            : DType::F8_E4M3;
  const int64_t m = state.range(2), n = state.range(3), k = state.range(4);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w32(size_t(n * k)), x(size_t(m * k)), y(size_t(m * n));
  for (float& v : w32) v = round_to_bf16(dist(rng));
  for (float& v : x) v = round_to_bf16(dist(rng) * 20);
  std::vector<bf16> w16(w32.size());
  std::vector<fp8_e4m3> w8(w32.size());
  std::vector<float> scales(size_t(weight_scale_rows(n) * weight_scale_cols(k)));
  GemmParams p;
  p.x = x.data();
  p.weight_dtype = dtype;
  p.y = y.data();
  p.m = m;
  p.n = n;
  p.k = k;
  p.kernel = GemmKernel(state.range(1));
  p.round_output_to_bf16 = dtype != DType::F32;
  if (dtype == DType::F32) {
    p.weight = w32.data();
  } else if (dtype == DType::BF16) {
    for (size_t i = 0; i < w32.size(); ++i) w16[i] = float_to_bf16(w32[i]);
    p.weight = w16.data();
  } else {
    quantize_weight_fp8(w32.data(), n, k, w8.data(), scales.data());
    p.weight = w8.data();
    p.weight_scale = scales.data();
  }
  ThreadPool pool(int(state.range(5)));
  for (auto _ : state) {
    gemm(p, pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Gemm)
    ->ArgNames({"dtype", "kernel", "M", "N", "K", "threads"})
    ->ArgsProduct({{0, 1, 2}, {1, 2}, {1, 8, 16, 64, 512}, {2048}, {7168}, {1, 2}})
    ->ArgsProduct({{0, 1, 2}, {1, 2}, {1, 64, 512}, {7168}, {2048}, {1, 2}})
    ->ArgsProduct({{2}, {1, 2}, {1, 8, 64, 512}, {512}, {512}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace dsa

BENCHMARK_MAIN();
