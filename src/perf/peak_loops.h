// The arithmetic loops behind measure_machine_peaks (machine_peaks.h), exposed so tests can check
// that every chain of a loop is computed: a loop whose chains start equal gets folded into one
// chain by the compiler and times the instruction's latency instead of its throughput.
//
// Each loop runs `iterations` rounds of 12 independent multiply-add chains on the widest vectors
// it has, chain i starting from seed + i, writes the sum of every accumulator lane to *sink and
// returns the FLOP it did (a multiply-add counts 2).
#pragma once

#include <cstdint>

namespace dsa::peak_loops {

// fp32 FMA, a = a * 0.999999f + 1e-7f, on the SIMD target Highway dispatches to.
double fma_loop(int64_t iterations, float seed, float* sink);

// vdpbf16ps, acc += 1.0 * 2^-20 + 1.0 * 2^-20 per lane and round (32 multiply-adds per
// instruction). Only call when detect_cpu_features().avx512bf16.
double bf16_dot_loop(int64_t iterations, float seed, float* sink);

}  // namespace dsa::peak_loops
