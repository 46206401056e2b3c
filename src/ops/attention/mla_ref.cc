// Scalar references for MLA attention, following REF's bf16 rounding points (§5.4, §5.5).
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/float_formats.h"
#include "ops/attention/mla.h"

namespace dsa {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

float dot(const float* a, const float* b, int n) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// REF's bf16 softmax over `scores` (already bf16 values): fp32 math inside, bf16 probabilities.
// Returns the log-sum-exp of the scores (+inf when there are none).
float softmax_bf16(std::vector<float>& scores) {
  if (scores.empty()) return kInf;
  float max_score = -kInf;
  for (float s : scores) max_score = std::max(max_score, s);
  float sum = 0.0f;
  for (float s : scores) sum += std::exp(s - max_score);
  for (float& s : scores) s = round_to_bf16(std::exp(s - max_score) / sum);
  return max_score + std::log(sum);
}

// One head of one query in absorbed mode. `keys` holds the unpacked keys [n, dims.key()].
void attend_latent_head(const float* q, const std::vector<float>& keys, LatentDims dims,
                        float scale, float* out, float* lse) {
  const int key_dim = dims.key();
  const size_t n = keys.size() / size_t(key_dim);
  std::vector<float> scores(n);
  for (size_t j = 0; j < n; ++j) {
    const float* key = &keys[j * key_dim];
    const float nope = round_to_bf16(dot(q, key, dims.latent));
    const float pe = round_to_bf16(dot(q + dims.latent, key + dims.latent, dims.rope));
    scores[j] = round_to_bf16(round_to_bf16(nope + pe) * scale);
  }
  *lse = softmax_bf16(scores);
  for (int c = 0; c < dims.latent; ++c) {
    float sum = 0.0f;
    for (size_t j = 0; j < n; ++j) sum += scores[j] * keys[j * key_dim + c];
    out[c] = round_to_bf16(sum);
  }
}

void check_heads_and_scale(int64_t heads, float scale, const char* op) {
  if (heads <= 0) fail("{}: num_heads must be positive, got {}", op, heads);
  if (!(scale > 0.0f) || !std::isfinite(scale)) {
    fail("{}: softmax_scale must be positive and finite, got {}", op, scale);
  }
}

}  // namespace

float mla_softmax_scale() {
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  return float(std::pow(192.0, -0.5) * mscale * mscale);
}

void validate(const SparseMlaParams& p) {
  check_heads_and_scale(p.num_heads, p.softmax_scale, "sparse_mla");
  validate(p.cache.dims, "sparse_mla");
  if (p.num_queries < 0 || p.topk < 0) {
    fail("sparse_mla: num_queries and topk must be >= 0, got {} and {}", p.num_queries, p.topk);
  }
  if (p.num_queries == 0) return;
  if (!p.q || !p.out || !p.lse || (p.topk > 0 && !p.indices)) fail("sparse_mla: null tensor");
  if (p.cache.num_tokens > 0 && !p.cache.data) fail("sparse_mla: null cache");
  for (int64_t t = 0; t < p.num_queries; ++t) {
    for (int64_t i = 0; i < p.topk; ++i) {
      const int32_t index = p.indices[t * p.topk + i];
      if (index < -1 || index >= p.cache.num_tokens) {
        fail("sparse_mla: indices[{}, {}] = {} is outside the cache of {} tokens (-1 = no key)", t,
             i, index, p.cache.num_tokens);
      }
    }
  }
}

void validate(const DenseMlaParams& p) {
  check_heads_and_scale(p.num_heads, p.softmax_scale, "dense_mla");
  validate(p.cache.dims, "dense_mla");
  if (!p.q || !p.out || !p.lse) fail("dense_mla: null tensor");
  if (p.cache.num_tokens < 0 || (p.cache.num_tokens > 0 && !p.cache.data)) {
    fail("dense_mla: bad cache ({} tokens)", p.cache.num_tokens);
  }
}

void validate(const MhaPrefillParams& p) {
  check_heads_and_scale(p.num_heads, p.softmax_scale, "mha_prefill");
  if (p.qk_dim <= 0 || p.v_dim <= 0) {
    fail("mha_prefill: qk_dim and v_dim must be positive, got {} and {}", p.qk_dim, p.v_dim);
  }
  if (p.num_queries < 0 || p.num_keys < p.num_queries) {
    fail("mha_prefill: need 0 <= num_queries <= num_keys, got {} queries and {} keys",
         p.num_queries, p.num_keys);
  }
  if (p.num_queries > 0 && (!p.q || !p.k || !p.v || !p.out)) fail("mha_prefill: null tensor");
  if (p.topk < 0 || (p.topk > 0 && !p.indices)) {
    fail("mha_prefill: topk must be >= 0 with indices set when positive, got topk {}", p.topk);
  }
  if (!p.indices) return;
  for (int64_t t = 0; t < p.num_queries; ++t) {
    for (int64_t i = 0; i < p.topk; ++i) {
      const int32_t index = p.indices[t * p.topk + i];
      if (index < -1 || index >= p.num_keys) {
        fail("mha_prefill: indices[{}, {}] = {} is outside the {} keys (-1 = no key)", t, i, index,
             p.num_keys);
      }
    }
  }
}

void sparse_mla_ref(const SparseMlaParams& p) {
  validate(p);
  const LatentDims dims = p.cache.dims;
  const size_t key_dim = size_t(dims.key());
  std::vector<float> keys;
  for (int64_t t = 0; t < p.num_queries; ++t) {
    keys.clear();
    for (int64_t i = 0; i < p.topk; ++i) {
      const int32_t index = p.indices[t * p.topk + i];
      if (index < 0) continue;  // -1: no key in this slot
      keys.resize(keys.size() + key_dim);
      unpack_latent_token(p.cache.token(index), p.cache.format, dims,
                          std::span<float>(keys.data() + keys.size() - key_dim, key_dim));
    }
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const int64_t row = t * p.num_heads + h;
      attend_latent_head(p.q + row * dims.key(), keys, dims, p.softmax_scale,
                         p.out + row * dims.latent, p.lse + row);
    }
  }
}

void dense_mla_ref(const DenseMlaParams& p) {
  validate(p);
  const LatentDims dims = p.cache.dims;
  const size_t key_dim = size_t(dims.key());
  std::vector<float> keys(size_t(p.cache.num_tokens) * key_dim);
  for (int64_t j = 0; j < p.cache.num_tokens; ++j) {
    unpack_latent_token(p.cache.token(j), p.cache.format, dims,
                        std::span<float>(keys.data() + j * key_dim, key_dim));
  }
  for (int64_t h = 0; h < p.num_heads; ++h) {
    attend_latent_head(p.q + h * dims.key(), keys, dims, p.softmax_scale, p.out + h * dims.latent,
                       p.lse + h);
  }
}

void mha_prefill_ref(const MhaPrefillParams& p) {
  validate(p);
  const int64_t H = p.num_heads, qk_dim = p.qk_dim, v_dim = p.v_dim;
  const int64_t offset = p.num_keys - p.num_queries;  // position of query 0 among the keys
  std::vector<float> scores;
  std::vector<char> selected;
  std::vector<int64_t> keys;  // the keys row t sees, ascending
  for (int64_t t = 0; t < p.num_queries; ++t) {
    // The causal mask leaves keys 0 .. t + offset; REF's index mask, when given, only those listed.
    selected.assign(size_t(t + offset + 1), p.indices ? 0 : 1);
    for (int64_t i = 0; p.indices && i < p.topk; ++i) {
      const int32_t index = p.indices[t * p.topk + i];
      if (index >= 0 && index <= t + offset) selected[size_t(index)] = 1;
    }
    keys.clear();
    for (int64_t s = 0; s <= t + offset; ++s) {
      if (selected[size_t(s)]) keys.push_back(s);
    }
    for (int64_t h = 0; h < H; ++h) {
      // scores = einsum(q, k) in bf16, then .mul_(softmax_scale) in bf16.
      const float* q = p.q + (t * H + h) * qk_dim;
      scores.resize(keys.size());
      for (size_t j = 0; j < keys.size(); ++j) {
        const float raw = round_to_bf16(dot(q, p.k + (keys[j] * H + h) * qk_dim, int(qk_dim)));
        scores[j] = round_to_bf16(raw * p.softmax_scale);
      }
      softmax_bf16(scores);
      float* out = p.out + (t * H + h) * v_dim;
      for (int64_t d = 0; d < v_dim; ++d) {
        float sum = 0.0f;  // 0 for a row without keys
        for (size_t j = 0; j < keys.size(); ++j)
          sum += scores[j] * p.v[(keys[j] * H + h) * v_dim + d];
        out[d] = round_to_bf16(sum);
      }
    }
  }
}

}  // namespace dsa
