#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/fp8_quant.h"
#include "ops/indexer/hadamard.h"
#include "ops/indexer/indexer.h"
#include "ops/norms/norms.h"

namespace dsa {
namespace {

void check_rope_table(const RopeTable* rope, const char* op) {
  if (rope == nullptr) fail("{}: no RopeTable given", op);
  // The rotated prefix must fit in the 128-dim head (RopeTable itself ensures an even width).
  if (rope->pairs() < 1 || rope->pairs() * 2 > kIndexerHeadDim) {
    fail("{}: the RoPE table must rotate 2 to {} dims (within the indexer head), got {}", op,
         kIndexerHeadDim, rope->pairs() * 2);
  }
}

// act_quant (ue8m0) of bf16 rows of 128: codes and one scale per row.
void quantize_rows(const bf16* x, int64_t rows, fp8_e4m3* codes, float* scales) {
  float row[kIndexerHeadDim];
  for (int64_t r = 0; r < rows; ++r) {
    for (int d = 0; d < kIndexerHeadDim; ++d) row[d] = bf16_to_float(x[r * kIndexerHeadDim + d]);
    act_quant_row(row, ScaleFormat::kUe8m0, {codes + r * kIndexerHeadDim, kIndexerHeadDim},
                  {scales + r, 1});
  }
}

// Indexer q and k rows both get non-interleaved RoPE on their first r dims, then the Hadamard
// rotation (dsa-reference §3.4): `x` is [tokens, heads, 128] bf16, rotated in place.
void rotate_rows(bf16* x, int64_t tokens, int64_t heads, int64_t start_pos, const RopeTable& rope) {
  apply_rope_reference({.x = x,
                        .tokens = tokens,
                        .heads = heads,
                        .row = kIndexerHeadDim,
                        .offset = 0,
                        .start_pos = start_pos,
                        .layout = RopeLayout::kHalves,
                        .table = &rope});
  hadamard_128_reference({.x = x, .out = x, .rows = tokens * heads});
}

}  // namespace

void validate(const IndexerKeyParams& params) {
  check_rope_table(params.rope, "indexer_keys");
  if (params.tokens < 0 || params.start_pos < 0) {
    fail("indexer_keys: tokens and start_pos must be >= 0, got {} and {}", params.tokens,
         params.start_pos);
  }
  if (params.start_pos + params.tokens > params.cache_capacity) {
    fail("indexer_keys: positions [{}, {}) exceed the key cache capacity {}", params.start_pos,
         params.start_pos + params.tokens, params.cache_capacity);
  }
  if (params.tokens > 0 && (!params.k || !params.norm_weight || !params.norm_bias ||
                            !params.key_codes || !params.key_scales)) {
    fail("indexer_keys: k, norm_weight, norm_bias, key_codes and key_scales must be set");
  }
}

void validate(const IndexerQueryParams& params) {
  check_rope_table(params.rope, "indexer_queries");
  if (params.tokens < 0 || params.start_pos < 0 || params.heads <= 0) {
    fail("indexer_queries: need tokens >= 0, start_pos >= 0, heads > 0; got {}, {}, {}",
         params.tokens, params.start_pos, params.heads);
  }
  if (params.tokens > 0 &&
      (!params.q || !params.weights_proj || !params.q_codes || !params.head_weights)) {
    fail("indexer_queries: q, weights_proj, q_codes and head_weights must be set");
  }
}

void validate(const IndexerScoresParams& params) {
  if (params.tokens < 0 || params.start_pos < 0 || params.heads <= 0) {
    fail("indexer_scores: need tokens >= 0, start_pos >= 0, heads > 0; got {}, {}, {}",
         params.tokens, params.start_pos, params.heads);
  }
  if (params.start_pos + params.tokens > params.keys) {
    fail("indexer_scores: query positions [{}, {}) need keys up to {}, but the cache holds {}",
         params.start_pos, params.start_pos + params.tokens, params.start_pos + params.tokens,
         params.keys);
  }
  if (params.tokens > 0 && (!params.q_codes || !params.head_weights || !params.key_codes ||
                            !params.key_scales || !params.scores)) {
    fail("indexer_scores: q_codes, head_weights, key_codes, key_scales and scores must be set");
  }
}

void indexer_keys_reference(const IndexerKeyParams& params) {
  validate(params);
  std::vector<bf16> k(size_t(params.tokens * kIndexerHeadDim));
  layer_norm_reference({.x = params.k,
                        .weight = params.norm_weight,
                        .bias = params.norm_bias,
                        .out = k.data(),
                        .tokens = params.tokens,
                        .dim = kIndexerHeadDim});
  rotate_rows(k.data(), params.tokens, 1, params.start_pos, *params.rope);
  quantize_rows(k.data(), params.tokens, params.key_codes + params.start_pos * kIndexerHeadDim,
                params.key_scales + params.start_pos);
}

void indexer_queries_reference(const IndexerQueryParams& params) {
  validate(params);
  const int64_t rows = params.tokens * params.heads;
  std::vector<bf16> q(params.q, params.q + rows * kIndexerHeadDim);
  rotate_rows(q.data(), params.tokens, params.heads, params.start_pos, *params.rope);
  std::vector<float> q_scales(static_cast<size_t>(rows));
  quantize_rows(q.data(), rows, params.q_codes, q_scales.data());
  const float heads_scale = float(1.0 / std::sqrt(double(params.heads)));  // H ** -0.5
  for (int64_t r = 0; r < rows; ++r) {
    params.head_weights[r] =
        params.weights_proj[r] * heads_scale * q_scales[r] * kIndexerSoftmaxScale;
  }
}

void indexer_scores_reference(const IndexerScoresParams& params) {
  validate(params);
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < params.tokens; ++t) {
    const int64_t last_key = params.start_pos + t;  // causal: keys 0 .. last_key
    for (int64_t s = 0; s < params.keys; ++s) {
      float* score = params.scores + t * params.keys + s;
      if (s > last_key) {
        *score = kMasked;
        continue;
      }
      const fp8_e4m3* k = params.key_codes + s * kIndexerHeadDim;
      float head_sum = 0.0f;
      for (int64_t h = 0; h < params.heads; ++h) {
        const fp8_e4m3* q = params.q_codes + (t * params.heads + h) * kIndexerHeadDim;
        float logit = 0.0f;
        for (int d = 0; d < kIndexerHeadDim; ++d) logit += fp8_to_float(q[d]) * fp8_to_float(k[d]);
        head_sum += std::max(logit, 0.0f) * params.head_weights[t * params.heads + h];
      }
      *score = head_sum * params.key_scales[s];
    }
  }
}

}  // namespace dsa
