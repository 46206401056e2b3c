// Fast indexer keys and queries: the reference pipelines with the fast RoPE, Hadamard and
// LayerNorm, and act_quant per row in parallel.
#include <cmath>
#include <vector>

#include "core/fp8_quant.h"
#include "ops/indexer/hadamard.h"
#include "ops/indexer/indexer.h"
#include "ops/norms/norms.h"

namespace dsa {
namespace {

// act_quant (ue8m0) of bf16 rows of 128 in parallel: codes and one scale per row.
void quantize_rows(const bf16* x, int64_t rows, fp8_e4m3* codes, float* scales, ThreadPool& pool) {
  pool.parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    float row[kIndexerHeadDim];
    for (int64_t r = begin; r < end; ++r) {
      for (int d = 0; d < kIndexerHeadDim; ++d) row[d] = bf16_to_float(x[r * kIndexerHeadDim + d]);
      act_quant_row(row, ScaleFormat::kUe8m0, {codes + r * kIndexerHeadDim, kIndexerHeadDim},
                    {scales + r, 1});
    }
  });
}

// Indexer q and k rows both get non-interleaved RoPE on their first r dims, then the Hadamard
// rotation (dsa-reference §3.4): `x` is [tokens, heads, 128] bf16, rotated in place.
void rotate_rows(bf16* x, int64_t tokens, int64_t heads, int64_t start_pos, const RopeTable& rope,
                 ThreadPool& pool) {
  apply_rope({.x = x,
              .tokens = tokens,
              .heads = heads,
              .row = kIndexerHeadDim,
              .offset = 0,
              .start_pos = start_pos,
              .layout = RopeLayout::kHalves,
              .table = &rope},
             pool);
  hadamard_128({.x = x, .out = x, .rows = tokens * heads}, pool);
}

}  // namespace

void indexer_keys(const IndexerKeyParams& params, ThreadPool& pool) {
  validate(params);
  std::vector<bf16> k(size_t(params.tokens * kIndexerHeadDim));
  layer_norm({.x = params.k,
              .weight = params.norm_weight,
              .bias = params.norm_bias,
              .out = k.data(),
              .tokens = params.tokens,
              .dim = kIndexerHeadDim},
             pool);
  rotate_rows(k.data(), params.tokens, 1, params.start_pos, *params.rope, pool);
  quantize_rows(k.data(), params.tokens, params.key_codes + params.start_pos * kIndexerHeadDim,
                params.key_scales + params.start_pos, pool);
}

void indexer_queries(const IndexerQueryParams& params, ThreadPool& pool) {
  validate(params);
  const int64_t rows = params.tokens * params.heads;
  std::vector<bf16> q(params.q, params.q + rows * kIndexerHeadDim);
  rotate_rows(q.data(), params.tokens, params.heads, params.start_pos, *params.rope, pool);
  std::vector<float> q_scales(static_cast<size_t>(rows));
  quantize_rows(q.data(), rows, params.q_codes, q_scales.data(), pool);
  const float heads_scale = float(1.0 / std::sqrt(double(params.heads)));  // H ** -0.5
  for (int64_t r = 0; r < rows; ++r) {
    params.head_weights[r] =
        params.weights_proj[r] * heads_scale * q_scales[r] * kIndexerSoftmaxScale;
  }
}

}  // namespace dsa
