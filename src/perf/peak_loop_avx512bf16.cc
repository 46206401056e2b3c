// The vdpbf16ps peak loop (peak_loops.h), compiled with target attributes like the AVX512-BF16
// kernels in src/ops: Highway 1.0.3 has no wrapper for the instruction.
#include "perf/peak_loops.h"

// GCC 12 warns that _mm512_undefined_*() inside the intrinsics is used uninitialized
// (GCC bug 105593, fixed in GCC 13); the value is a don't-care operand.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace dsa::peak_loops {

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) double bf16_dot_loop(
    int64_t iterations, float seed, float* sink) {
  // bf16 pairs (1.0, 1.0) and (2^-20, 2^-20): each instruction adds 2^-19 to every lane.
  const __m512i ones = _mm512_set1_epi32(0x3F803F80);
  const __m512i tiny = _mm512_set1_epi32(0x35803580);
  const __m512bh a = reinterpret_cast<const __m512bh&>(ones);
  const __m512bh b = reinterpret_cast<const __m512bh&>(tiny);
  constexpr int kChains = 12;  // 2 ports x 6 cycles of latency on Zen 4/5
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(seed + float(i));
  for (int64_t n = 0; n < iterations; ++n) {
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  *sink = _mm512_reduce_add_ps(sum);
  return 2.0 * 32.0 * kChains * double(iterations);
}

}  // namespace dsa::peak_loops

#pragma GCC diagnostic pop
