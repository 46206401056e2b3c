// The attention benchmark runner at tiny depths: every case is present with positive times and
// the work counts equal the formulas of attention_bench.h, written out here independently; bad
// configurations are rejected with a message naming the field. Machine peaks: positive, named.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/cpu_features.h"
#include "core/error.h"
#include "perf/attention_bench.h"
#include "perf/machine_peaks.h"
#include "perf/peak_loops.h"

namespace dsa {
namespace {

// Per key and query row (V3.2 shapes): MLA 128 heads x (576 + 512) x 2 FLOP; indexer 64 x 128 x 2.
constexpr double kMlaFlopPerKey = 128.0 * 1088 * 2;
constexpr double kIndexerFlopPerKey = 64.0 * 128 * 2;

void expect_positive_times(const TimingStats& stats, int runs) {
  EXPECT_EQ(stats.runs, runs);
  EXPECT_GT(stats.median, 0);
  EXPECT_LE(stats.min, stats.median);
  EXPECT_GE(stats.max, stats.median);
}

TEST(AttentionBench, DecodeAndPrefillRecordsMatchTheFormulas) {
  ThreadPool pool(2);
  AttentionBenchConfig config;
  config.depths = {256, 512};
  config.decode = true;
  config.prefill = true;
  config.chunk = 4;
  config.runs = 1;
  std::vector<std::pair<int, int>> progress;
  const std::vector<AttentionResult> results = run_attention_bench(
      config, pool, [&](int done, int total) { progress.emplace_back(done, total); });
  ASSERT_EQ(results.size(), 10u);  // decode: 3 modes x 2 depths; prefill: 2 modes x 2 depths
  EXPECT_EQ(attention_bench_cases(config), 10);
  ASSERT_EQ(progress.size(), 10u);
  EXPECT_EQ(progress.back(), std::make_pair(10, 10));

  const char* decode_modes[] = {"dense_bf16", "dense_fp8", "dsa"};
  for (size_t i = 0; i < 6; ++i) {
    const AttentionResult& r = results[i];
    const double depth = i < 3 ? 256 : 512;
    SCOPED_TRACE(r.mode + " decode " + std::to_string(r.depth));
    EXPECT_EQ(r.phase, BenchPhase::kDecode);
    EXPECT_EQ(r.mode, decode_modes[i % 3]);
    EXPECT_EQ(r.depth, int64_t(depth));
    EXPECT_EQ(r.tokens, 1);
    expect_positive_times(r.seconds, 1);
    if (r.mode == "dsa") {
      ASSERT_EQ(r.stages.size(), 3u);
      EXPECT_EQ(r.stages[0].name, "indexer");
      EXPECT_EQ(r.stages[1].name, "topk");
      EXPECT_EQ(r.stages[2].name, "sparse_mla");
      for (const StageResult& stage : r.stages) expect_positive_times(stage.seconds, 1);
      // depth < 2048: sparse MLA attends every key.
      EXPECT_DOUBLE_EQ(r.stages[0].flops, kIndexerFlopPerKey * depth);
      EXPECT_DOUBLE_EQ(r.stages[0].bytes, 132 * depth);
      EXPECT_DOUBLE_EQ(r.stages[1].flops, 0);
      EXPECT_DOUBLE_EQ(r.stages[1].bytes, 4 * depth);
      EXPECT_DOUBLE_EQ(r.stages[2].flops, kMlaFlopPerKey * depth);
      EXPECT_DOUBLE_EQ(r.stages[2].bytes, 656 * depth);
      EXPECT_DOUBLE_EQ(r.flops, (kIndexerFlopPerKey + kMlaFlopPerKey) * depth);
      EXPECT_DOUBLE_EQ(r.bytes, (132 + 4 + 656) * depth);
      // The total is the per-run sum of the stages.
      EXPECT_DOUBLE_EQ(r.seconds.median, r.stages[0].seconds.median + r.stages[1].seconds.median +
                                             r.stages[2].seconds.median);
    } else {
      EXPECT_TRUE(r.stages.empty());
      EXPECT_DOUBLE_EQ(r.flops, kMlaFlopPerKey * depth);
      EXPECT_DOUBLE_EQ(r.bytes, (r.mode == "dense_fp8" ? 656 : 1152) * depth);
    }
  }
  // Prefill at position P with 4 rows: row t sees P + t + 1 keys, 4P + 10 in all.
  const char* prefill_modes[] = {"dense_fp8", "dsa"};
  for (size_t i = 6; i < 10; ++i) {
    const AttentionResult& r = results[i];
    const double position = i < 8 ? 256 : 512, keys = 4 * position + 10;
    SCOPED_TRACE(r.mode + " prefill " + std::to_string(r.depth));
    EXPECT_EQ(r.phase, BenchPhase::kPrefill);
    EXPECT_EQ(r.mode, prefill_modes[(i - 6) % 2]);
    EXPECT_EQ(r.tokens, 4);
    expect_positive_times(r.seconds, 1);
    const double expected_flops =
        r.mode == "dsa" ? (kIndexerFlopPerKey + kMlaFlopPerKey) * keys : kMlaFlopPerKey * keys;
    EXPECT_DOUBLE_EQ(r.flops, expected_flops);
    EXPECT_DOUBLE_EQ(r.seconds_per_token().median, r.seconds.median / 4);
  }
}

TEST(AttentionBench, SparseCountsClipAtTopk) {
  const AttentionShape shape;
  // Rows at positions 3000 and 3001 see 3001 and 3002 keys; sparse MLA reads 2048 of each.
  EXPECT_DOUBLE_EQ(sparse_mla_flops(shape, 3000, 2), kMlaFlopPerKey * 4096);
  EXPECT_DOUBLE_EQ(sparse_mla_bytes(shape, 3000, 2), 656.0 * 4096);
  EXPECT_DOUBLE_EQ(mla_flops(shape, 3000, 2), kMlaFlopPerKey * 6003);
  EXPECT_DOUBLE_EQ(mla_bytes(3000, 2, false), 1152.0 * 6003);
  EXPECT_DOUBLE_EQ(indexer_flops(shape, 3000, 2), kIndexerFlopPerKey * 6003);
  EXPECT_DOUBLE_EQ(indexer_bytes(3000, 2), 132.0 * 6003);
  EXPECT_DOUBLE_EQ(topk_bytes(3000, 2), 4.0 * 6003);
}

void expect_config_error(const AttentionBenchConfig& config, const std::string& message) {
  try {
    validate(config);
    FAIL() << "no error for " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(AttentionBench, RejectsBadConfigurations) {
  AttentionBenchConfig config;
  expect_config_error(config, "bench attention: no depths given");
  config.depths = {1024, 0};
  expect_config_error(config, "bench attention: depth 0 must be at least 1");
  config.depths = {-5};
  expect_config_error(config, "bench attention: depth -5 must be at least 1");
  config.depths = {1024};
  config.chunk = 0;
  expect_config_error(config, "bench attention: chunk 0 must be at least 1");
  config.chunk = 64;
  config.runs = 0;
  expect_config_error(config, "bench attention: runs 0 must be at least 1");
  config.runs = 1;
  config.decode = false;
  expect_config_error(config, "bench attention: neither decode nor prefill asked");
  ThreadPool pool(1);
  config.depths = {};
  EXPECT_THROW(run_attention_bench(config, pool), Error);
}

TEST(MachinePeaks, SmallMeasurementIsPositive) {
  ThreadPool pool(2);
  MachinePeakOptions options;
  options.read_buffer_bytes = int64_t(8) << 20;
  options.read_passes = 1;
  options.fma_pass_seconds = 0.001;
  options.fma_repeats = 1;
  const MachinePeaks peaks = measure_machine_peaks(pool, options);
  EXPECT_GT(peaks.read_bytes_per_second, 0);
  EXPECT_GT(peaks.fp32_flops_per_second, 0);
  if (detect_cpu_features().avx512bf16) {
    EXPECT_GT(peaks.bf16_dot_flops_per_second, 0);
  } else {
    EXPECT_EQ(peaks.bf16_dot_flops_per_second, 0);
  }
  EXPECT_FALSE(simd_target_name().empty());
  EXPECT_FALSE(cpu_model_name().empty());
}

// The peak loops must compute 12 distinct chains: chains that start equal are merged by the
// compiler into one, and the loop then times FMA latency, not throughput (this overstated the
// fp32 peak by 1.5x until the chains got their own seeds). The sink is checked against the 12
// distinct chains computed here one by one.
TEST(MachinePeaks, FmaLoopComputesTwelveDistinctChains) {
  constexpr int64_t kIterations = 1000;
  constexpr float kSeed = 3.0f;
  float sink = 0;
  const double flops = peak_loops::fma_loop(kIterations, kSeed, &sink);
  const double lanes = flops / (2.0 * 12 * kIterations);
  ASSERT_EQ(lanes, std::floor(lanes));
  ASSERT_GE(lanes, 1);
  double expected = 0;
  for (int chain = 0; chain < 12; ++chain) {
    float a = kSeed + float(chain);
    for (int64_t i = 0; i < kIterations; ++i) a = std::fma(a, 0.999999f, 1e-7f);
    expected += lanes * double(a);
  }
  // Only the final lane sum's order differs: float rounding of ~200 positive terms.
  EXPECT_NEAR(sink, expected, expected * 1e-5);
}

TEST(MachinePeaks, Bf16DotLoopComputesTwelveDistinctChains) {
  if (!detect_cpu_features().avx512bf16) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  constexpr int64_t kIterations = 4096;
  float sink = 0;
  EXPECT_EQ(peak_loops::bf16_dot_loop(kIterations, 1.0f, &sink), 2.0 * 32 * 12 * kIterations);
  // Chain i is 1 + i + n * 2^-19 in all 16 lanes, exact in fp32 below 16.
  double expected = 0;
  for (int chain = 0; chain < 12; ++chain) {
    expected += 16 * (1.0 + chain + double(kIterations) * std::ldexp(1.0, -19));
  }
  EXPECT_NEAR(sink, expected, expected * 1e-6);
}

}  // namespace
}  // namespace dsa
