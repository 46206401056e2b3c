// What this machine can do at best, measured, so benchmarks can say how close a kernel gets:
// the memory read bandwidth (all threads streaming through a buffer far larger than the last
// level cache), the fp32 FMA rate (independent accumulators on the widest SIMD target Highway
// dispatches to, all threads) and, on CPUs with AVX512-BF16, the rate of vdpbf16ps, the
// instruction of the indexer's and MLA's bf16 kernels. Each measurement takes a few hundred
// milliseconds.
#pragma once

#include <cstdint>
#include <string>

#include "core/thread_pool.h"

namespace dsa {

struct MachinePeaks {
  double read_bytes_per_second = 0;  // best of the passes
  double fp32_flops_per_second = 0;  // best of the repeats; an FMA counts 2 FLOP
  // vdpbf16ps: 32 bf16 multiply-adds per instruction, 2 FLOP each; 0 without AVX512-BF16.
  double bf16_dot_flops_per_second = 0;
};

struct MachinePeakOptions {
  int64_t read_buffer_bytes = int64_t(512) << 20;  // 512 MiB: well above any LLC we target
  int read_passes = 3;
  // Each arithmetic loop (fp32 FMA, bf16 dot) doubles its length until one pass lasts this long
  // (so the measurement costs the same in Release and in a sanitizer build), then keeps the best
  // of `fma_repeats` passes.
  double fma_pass_seconds = 0.05;
  int fma_repeats = 3;
};

MachinePeaks measure_machine_peaks(ThreadPool& pool, const MachinePeakOptions& options = {});

// Highway's name for the SIMD target the kernels dispatch to here ("AVX3", "AVX2", ...).
std::string simd_target_name();

// The CPU's model name from /proc/cpuinfo, or "unknown CPU".
std::string cpu_model_name();

}  // namespace dsa
