// MLA q·k scores with AVX512-BF16 (vdpbf16ps), used by mla_fast.cc when the CPU has it. The
// queries and the dequantized keys hold bf16 values, so the products are exact in fp32 as on the
// Highway fp32 path; only the summation order differs. Compiled with target attributes: call only
// when detect_cpu_features().avx512bf16.
#pragma once

#include <cstdint>

namespace dsa::mla_internal {

// Dwords per row of bf16 pairs for `dim` values: dim / 2 rounded up to whole vectors of 16, so
// any width runs on the same kernel (the padding pairs are zero and add nothing).
constexpr int bf16_pair_count(int dim) { return (dim + 31) / 32 * 16; }

// Rows of `dim` fp32 numbers holding bf16 values (any dim, row stride `x_stride`) -> rows of
// bf16_pair_count(dim) dwords (x[2j], x[2j+1]) as bf16 pairs, packed, zero past dim.
void to_bf16_pairs_avx512bf16(const float* x, int64_t rows, int64_t x_stride, int dim,
                              uint32_t* out);

// scores[r * score_stride + c] = scale * (q_r · k_c) for `rows` query rows and `count` keys,
// both as packed bf16 pairs of `pairs` dwords (a multiple of 16).
void score_chunk_avx512bf16(const uint32_t* q, int rows, const uint32_t* k, int count, int pairs,
                            float scale, float* scores, int score_stride);

}  // namespace dsa::mla_internal
