// The 128-point Hadamard rotation `rotate_activation` (dsa-reference.md §2.9), applied to the
// indexer's q and k after RoPE and before FP8 quantization:
//   y[i] = bf16( (sum_j H[i, j] * x[j]) * fl32(128^-0.5) ),  H[i, j] = (-1)^popcount(i & j)
// (Sylvester order, the same matrix as scipy.linalg.hadamard(128)); sums in fp32.
#pragma once

#include <cstdint>

#include "core/float_formats.h"
#include "core/thread_pool.h"

namespace dsa {

constexpr int kHadamardDim = 128;
constexpr float kHadamardScale = 0.08838834764831845f;  // fl32(128 ** -0.5) as Python rounds it

struct HadamardParams {
  const bf16* x = nullptr;  // [rows, 128]
  bf16* out = nullptr;      // [rows, 128]; may be x itself (in place)
  int64_t rows = 0;
};

// Throws dsa::Error naming the bad field.
void validate(const HadamardParams& params);

// Scalar reference: the explicit matrix product, summed over j in ascending order.
void hadamard_128_reference(const HadamardParams& params);
// Fast Walsh-Hadamard butterfly on Highway vectors over the pool's threads. Same fp32 terms,
// summed in butterfly order instead of ascending j.
void hadamard_128(const HadamardParams& params, ThreadPool& pool);

}  // namespace dsa
