// Peak measurements with Highway: a streaming sum for bandwidth, a chain-free FMA loop for FLOPs.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "perf/machine_peaks.cc"
#include "perf/machine_peaks.h"

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dsa {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of n floats (n a multiple of 4 vectors); four accumulators keep the adds off the critical
// path so the loads alone set the pace.
float StreamSum(const float* data, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (int64_t i = 0; i + 4 * lanes <= n; i += 4 * lanes) {
    a0 = hn::Add(a0, hn::LoadU(d, data + i));
    a1 = hn::Add(a1, hn::LoadU(d, data + i + lanes));
    a2 = hn::Add(a2, hn::LoadU(d, data + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(d, data + i + 3 * lanes));
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

// `iterations` rounds of 12 independent FMAs (enough chains to cover 2 FMA ports x 4-5 cycles
// latency). Every chain starts from its own value (seed + i): chains that start equal compute equal
// values, and the compiler then keeps one chain and copies it, which times the FMA latency instead
// of the throughput. Returns the FLOP count; *sink gets the sum over every accumulator's lanes.
double FmaLoop(int64_t iterations, float seed, float* sink) {
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.999999f), c = hn::Set(d, 1e-7f);
  auto a0 = hn::Set(d, seed), a1 = hn::Set(d, seed + 1), a2 = hn::Set(d, seed + 2);
  auto a3 = hn::Set(d, seed + 3), a4 = hn::Set(d, seed + 4), a5 = hn::Set(d, seed + 5);
  auto a6 = hn::Set(d, seed + 6), a7 = hn::Set(d, seed + 7), a8 = hn::Set(d, seed + 8);
  auto a9 = hn::Set(d, seed + 9), a10 = hn::Set(d, seed + 10), a11 = hn::Set(d, seed + 11);
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = hn::MulAdd(a0, m, c);
    a1 = hn::MulAdd(a1, m, c);
    a2 = hn::MulAdd(a2, m, c);
    a3 = hn::MulAdd(a3, m, c);
    a4 = hn::MulAdd(a4, m, c);
    a5 = hn::MulAdd(a5, m, c);
    a6 = hn::MulAdd(a6, m, c);
    a7 = hn::MulAdd(a7, m, c);
    a8 = hn::MulAdd(a8, m, c);
    a9 = hn::MulAdd(a9, m, c);
    a10 = hn::MulAdd(a10, m, c);
    a11 = hn::MulAdd(a11, m, c);
  }
  const auto sum = hn::Add(
      hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7))),
      hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
  *sink = hn::GetLane(hn::SumOfLanes(d, sum));
  return 2.0 * 12.0 * double(iterations) * double(hn::Lanes(d));
}

int64_t DispatchedTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace dsa
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "perf/peak_loops.h"
#include "perf/timing.h"

namespace dsa {

HWY_EXPORT(StreamSum);
HWY_EXPORT(FmaLoop);
HWY_EXPORT(DispatchedTarget);

double peak_loops::fma_loop(int64_t iterations, float seed, float* sink) {
  return HWY_DYNAMIC_DISPATCH(FmaLoop)(iterations, seed, sink);
}

namespace {

// Floats per work item: 1 MiB slices keep every thread streaming without a tail imbalance.
constexpr int64_t kSliceFloats = int64_t(1) << 18;

double measure_read_bandwidth(ThreadPool& pool, const MachinePeakOptions& options) {
  const int64_t slices = std::max<int64_t>(1, options.read_buffer_bytes / (4 * kSliceFloats));
  const auto buffer = std::make_unique_for_overwrite<float[]>(size_t(slices * kSliceFloats));
  // First touch from the pool's threads places the pages where they will be read.
  pool.parallel_for(slices, 1, [&](int64_t begin, int64_t end) {
    std::fill(buffer.get() + begin * kSliceFloats, buffer.get() + end * kSliceFloats, 1.0f);
  });
  std::atomic<int64_t> checksum{0};
  const auto pass = [&] {
    pool.parallel_for(slices, 1, [&](int64_t begin, int64_t end) {
      float sum = 0;
      for (int64_t s = begin; s < end; ++s) {
        sum += HWY_DYNAMIC_DISPATCH(StreamSum)(buffer.get() + s * kSliceFloats, kSliceFloats);
      }
      checksum += int64_t(sum);
    });
  };
  const std::vector<double> seconds = time_runs(1, options.read_passes, pass);
  DSA_CHECK(checksum.load() > 0);  // the sums were used
  const double best = *std::min_element(seconds.begin(), seconds.end());
  return double(slices * kSliceFloats) * 4.0 / best;
}

using PeakLoop = double (*)(int64_t iterations, float seed, float* sink);

// FLOP per second of `loop` on every thread of the pool.
double measure_loop_rate(ThreadPool& pool, const MachinePeakOptions& options, PeakLoop loop) {
  // Four items per thread so a thread that starts late does not idle the others at the end.
  const int64_t items = 4 * int64_t(pool.size());
  std::vector<float> sinks(static_cast<size_t>(items));
  std::vector<double> item_flops(static_cast<size_t>(items));
  int64_t iterations = int64_t(1) << 10;  // per item, 12 vector multiply-adds each
  const auto pass = [&] {
    pool.parallel_for(items, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        item_flops[size_t(i)] = loop(iterations, 1.0f + float(i), &sinks[size_t(i)]);
      }
    });
  };
  while (time_runs(0, 1, pass)[0] < options.fma_pass_seconds && iterations < (int64_t(1) << 32)) {
    iterations *= 2;
  }
  const std::vector<double> seconds = time_runs(0, options.fma_repeats, pass);
  const double best = *std::min_element(seconds.begin(), seconds.end());
  double flops = 0;
  for (double f : item_flops) flops += f;
  return flops / best;
}

}  // namespace

MachinePeaks measure_machine_peaks(ThreadPool& pool, const MachinePeakOptions& options) {
  DSA_CHECK(options.read_passes > 0 && options.fma_repeats > 0 && options.fma_pass_seconds > 0);
  MachinePeaks peaks;
  peaks.read_bytes_per_second = measure_read_bandwidth(pool, options);
  peaks.fp32_flops_per_second = measure_loop_rate(pool, options, peak_loops::fma_loop);
  if (detect_cpu_features().avx512bf16) {
    peaks.bf16_dot_flops_per_second = measure_loop_rate(pool, options, peak_loops::bf16_dot_loop);
  }
  return peaks;
}

std::string simd_target_name() { return hwy::TargetName(HWY_DYNAMIC_DISPATCH(DispatchedTarget)()); }

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
  }
  return "unknown CPU";
}

}  // namespace dsa
#endif  // HWY_ONCE
