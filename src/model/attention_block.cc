// MLA with DeepSeek Sparse Attention for one layer and one chunk (dsa-reference.md §3-§5):
// queries, the FP8 latent written to the cache, the lightning indexer and top-k, then attention
// in the kernel the mode calls for (forward.h), and the output projection.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "model/forward_internal.h"
#include "ops/attention/mla.h"
#include "ops/attention/mla_absorb.h"
#include "ops/indexer/indexer.h"
#include "ops/norms/norms.h"
#include "ops/topk/topk.h"

namespace dsa::forward_internal {
namespace {

struct Dims {
  int64_t T, P, H, nope, rope, qk, v, latent;
};

Dims dims_of(const Step& s) {
  const ModelConfig& c = s.config;
  return {.T = s.tokens,
          .P = s.start,
          .H = c.num_attention_heads,
          .nope = c.qk_nope_head_dim,
          .rope = c.qk_rope_head_dim,
          .qk = c.qk_head_dim(),
          .v = c.v_head_dim,
          .latent = c.kv_lora_rank};
}

// RoPE (interleaved, MLA's layout) on the last `rope` dims of rows of `row` floats.
void rope_interleaved(const Step& s, float* x, int64_t heads, int64_t row, int64_t offset) {
  const size_t n = size_t(s.tokens * heads * row);
  std::vector<bf16> b = to_bf16(x, n);
  apply_rope({.x = b.data(),
              .tokens = s.tokens,
              .heads = heads,
              .row = row,
              .offset = offset,
              .start_pos = s.start,
              .layout = RopeLayout::kInterleaved,
              .table = &s.rope},
             s.pool);
  to_float(b.data(), n, x);
}

// q [T, H, nope + rope] after RoPE; q_latent [T, q_lora_rank] (empty without query compression).
void project_queries(const Step& s, const AttentionWeights& w, const float* x, const Dims& d,
                     std::vector<float>& q_latent, std::vector<float>& q) {
  q.resize(size_t(d.T * d.H * d.qk));
  if (w.wq_a.data) {
    q_latent.resize(size_t(d.T * w.wq_a.out_features));
    linear(x, d.T, w.wq_a, q_latent.data(), s.pool);
    rms_norm_rows(q_latent.data(), d.T, w.q_norm, s.pool);
    s.emit("q_latent", q_latent.data(), {d.T, w.wq_a.out_features});
    linear(q_latent.data(), d.T, w.wq_b, q.data(), s.pool);
  } else {
    linear(x, d.T, w.wq_b, q.data(), s.pool);
  }
  rope_interleaved(s, q.data(), d.H, d.qk, d.nope);
  s.emit("q", q.data(), {d.T, d.H, d.qk});
}

// wkv_a, kv_norm on the latent, RoPE on k_pe, then the FP8 latent and bf16 k_pe into the cache
// at positions P .. P+T-1 (the FP8 round trip of dsa-reference §5.3 happens in the packing).
void write_latents(const Step& s, int64_t layer, const AttentionWeights& w, const float* x,
                   const Dims& d) {
  const int64_t row = d.latent + d.rope;
  std::vector<float> kv(size_t(d.T * row));
  linear(x, d.T, w.wkv_a, kv.data(), s.pool);
  rope_interleaved(s, kv.data(), 1, row, d.latent);
  std::vector<float> latent(size_t(d.T * d.latent));
  for (int64_t t = 0; t < d.T; ++t) {
    std::copy_n(kv.data() + t * row, d.latent, latent.data() + t * d.latent);
  }
  rms_norm_rows(latent.data(), d.T, w.kv_norm, s.pool);
  for (int64_t t = 0; t < d.T; ++t) {
    pack_latent_token({latent.data() + t * d.latent, size_t(d.latent)},
                      {kv.data() + t * row + d.latent, size_t(d.rope)}, LatentCacheFormat::kFp8,
                      ScaleFormat::kUe8m0, s.cache.latent_token(layer, d.P + t));
  }
  if (s.dump) {
    const LatentCacheView view = s.cache.latent(layer, d.P + d.T);
    std::vector<float> key(static_cast<size_t>(row));
    std::vector<float> cached(static_cast<size_t>(d.T * d.latent));
    std::vector<float> k_pe(static_cast<size_t>(d.T * d.rope));
    for (int64_t t = 0; t < d.T; ++t) {
      unpack_latent_token(view.token(d.P + t), view.format, view.dims, key);
      std::copy_n(key.data(), d.latent, cached.data() + t * d.latent);
      std::copy_n(key.data() + d.latent, d.rope, k_pe.data() + t * d.rope);
    }
    s.emit("kv_latent", cached.data(), {d.T, d.latent});
    s.emit("k_pe", k_pe.data(), {d.T, d.rope});
  }
}

// The lightning indexer: writes the layer's key-cache rows, and when `select` is set, scores
// every causal key and returns the top-k indices [T, index_topk] (ascending, -1 padded).
std::vector<int32_t> run_indexer(const Step& s, int64_t layer, const IndexerWeights& w,
                                 const float* x, const std::vector<float>& q_latent, const Dims& d,
                                 bool select) {
  const ModelConfig& c = s.config;
  const int64_t heads = c.index_n_heads;
  const int64_t dim = c.index_head_dim;
  std::vector<float> k(size_t(d.T * dim));
  linear(x, d.T, w.wk, k.data(), s.pool);
  const std::vector<bf16> k_bf16 = to_bf16(k.data(), k.size());
  indexer_keys({.k = k_bf16.data(),
                .norm_weight = w.k_norm_weight.data(),
                .norm_bias = w.k_norm_bias.data(),
                .rope = &s.rope,
                .tokens = d.T,
                .start_pos = d.P,
                .key_codes = s.cache.index_codes(layer),
                .key_scales = s.cache.index_scales(layer),
                .cache_capacity = s.cache.capacity()},
               s.pool);
  if (s.dump) {
    std::vector<float> key(size_t(d.T * dim));
    for (int64_t t = 0; t < d.T; ++t) {
      const float scale = s.cache.index_scales(layer)[d.P + t];
      for (int64_t i = 0; i < dim; ++i) {
        key[t * dim + i] = fp8_to_float(s.cache.index_codes(layer)[(d.P + t) * dim + i]) * scale;
      }
    }
    s.emit("indexer.key", key.data(), {d.T, dim});
  }
  if (!select) return {};

  std::vector<float> q(size_t(d.T * heads * dim));
  linear(q_latent.data(), d.T, w.wq_b, q.data(), s.pool);
  const std::vector<bf16> q_bf16 = to_bf16(q.data(), q.size());
  std::vector<float> weights_proj(size_t(d.T * heads));
  linear_fp32(x, d.T, w.weights_proj, weights_proj.data(), s.pool);
  std::vector<fp8_e4m3> q_codes(q.size());
  std::vector<float> head_weights(size_t(d.T * heads));
  indexer_queries({.q = q_bf16.data(),
                   .weights_proj = weights_proj.data(),
                   .rope = &s.rope,
                   .tokens = d.T,
                   .heads = heads,
                   .start_pos = d.P,
                   .q_codes = q_codes.data(),
                   .head_weights = head_weights.data()},
                  s.pool);
  const int64_t keys = d.P + d.T;
  std::vector<float> scores(size_t(d.T * keys));
  indexer_scores({.q_codes = q_codes.data(),
                  .head_weights = head_weights.data(),
                  .key_codes = s.cache.index_codes(layer),
                  .key_scales = s.cache.index_scales(layer),
                  .scores = scores.data(),
                  .tokens = d.T,
                  .heads = heads,
                  .keys = keys,
                  .start_pos = d.P},
                 s.pool);
  std::vector<int32_t> indices(size_t(d.T * c.index_topk));
  topk_select({.scores = scores.data(),
               .indices = indices.data(),
               .rows = d.T,
               .cols = keys,
               .k = c.index_topk},
              s.pool);
  s.emit("indexer.weights", head_weights.data(), {d.T, heads});
  s.emit("indexer.scores", scores.data(), {d.T, keys});
  s.emit("indexer.topk", indices.data(), {d.T, c.index_topk});
  return indices;
}

// Absorbed (MQA) attention over the latent cache: sparse over `indices` [T, topk], or (indices
// empty) dense over every causal key. Writes o [T, H, v].
void absorbed_attention(const Step& s, int64_t layer, const AttentionWeights& w,
                        const std::vector<float>& q, const std::vector<int32_t>& indices,
                        int64_t topk, const Dims& d, float* o) {
  const int64_t key = d.latent + d.rope;
  std::vector<float> q_nope(size_t(d.T * d.H * d.nope));
  std::vector<float> q_abs(size_t(d.T * d.H * key));
  for (int64_t r = 0; r < d.T * d.H; ++r) {
    std::copy_n(q.data() + r * d.qk, d.nope, q_nope.data() + r * d.nope);
    std::copy_n(q.data() + r * d.qk + d.nope, d.rope, q_abs.data() + r * key + d.latent);
  }
  const MlaAbsorbParams absorb{.wkv_b = w.wkv_b_bf16.data(),
                               .num_tokens = d.T,
                               .num_heads = d.H,
                               .nope_dim = d.nope,
                               .v_dim = d.v,
                               .latent_dim = d.latent,
                               .q_abs_stride = key};
  if (s.reference_attention) {
    absorb_query_ref(absorb, q_nope.data(), q_abs.data());
  } else {
    absorb_query(absorb, q_nope.data(), q_abs.data(), s.pool);
  }
  std::vector<float> o_latent(size_t(d.T * d.H * d.latent));
  std::vector<float> lse(size_t(d.T * d.H));
  const LatentCacheView cache = s.cache.latent(layer, d.P + d.T);
  if (!indices.empty()) {
    const SparseMlaParams params{.q = q_abs.data(),
                                 .cache = cache,
                                 .indices = indices.data(),
                                 .out = o_latent.data(),
                                 .lse = lse.data(),
                                 .num_queries = d.T,
                                 .num_heads = d.H,
                                 .topk = topk,
                                 .softmax_scale = s.softmax_scale};
    s.reference_attention ? sparse_mla_ref(params) : sparse_mla(params, s.pool);
  } else {
    for (int64_t t = 0; t < d.T; ++t) {  // row t sees the causal keys 0 .. P+t
      LatentCacheView causal = cache;
      causal.num_tokens = d.P + t + 1;
      const DenseMlaParams params{.q = q_abs.data() + t * d.H * key,
                                  .cache = causal,
                                  .out = o_latent.data() + t * d.H * d.latent,
                                  .lse = lse.data() + t * d.H,
                                  .num_heads = d.H,
                                  .softmax_scale = s.softmax_scale};
      s.reference_attention ? dense_mla_ref(params) : dense_mla(params, s.pool);
    }
  }
  if (s.reference_attention) {
    project_output_ref(absorb, o_latent.data(), o);
  } else {
    project_output(absorb, o_latent.data(), o, s.pool);
  }
}

// REF's prefill ("MHA mode", §5.4) over the cached keys 0 .. P+T-1: k_nope and v from wkv_b on
// the cached (FP8 round-tripped) latents, k_pe shared by the heads; each row attends to its
// causal keys, or to those of `indices` [T, topk] when given. Writes o [T, H, v].
void mha_attention(const Step& s, int64_t layer, const AttentionWeights& w,
                   const std::vector<float>& q, const std::vector<int32_t>& indices, int64_t topk,
                   const Dims& d, float* o) {
  const int64_t S = d.P + d.T;
  const LatentCacheView cache = s.cache.latent(layer, S);
  std::vector<float> latent(size_t(S * d.latent)), k_pe(size_t(S * d.rope));
  std::vector<float> key(size_t(d.latent + d.rope));
  for (int64_t j = 0; j < S; ++j) {
    unpack_latent_token(cache.token(j), cache.format, cache.dims, key);
    std::copy_n(key.data(), d.latent, latent.data() + j * d.latent);
    std::copy_n(key.data() + d.latent, d.rope, k_pe.data() + j * d.rope);
  }
  const int64_t per_head = d.nope + d.v;
  std::vector<float> kv(size_t(S * d.H * per_head));
  linear(latent.data(), S, w.wkv_b, kv.data(), s.pool);
  std::vector<float> k(size_t(S * d.H * d.qk)), v(size_t(S * d.H * d.v));
  for (int64_t j = 0; j < S; ++j) {
    for (int64_t h = 0; h < d.H; ++h) {
      const float* src = kv.data() + (j * d.H + h) * per_head;
      float* kr = k.data() + (j * d.H + h) * d.qk;
      std::copy_n(src, d.nope, kr);
      std::copy_n(k_pe.data() + j * d.rope, d.rope, kr + d.nope);
      std::copy_n(src + d.nope, d.v, v.data() + (j * d.H + h) * d.v);
    }
  }
  const MhaPrefillParams params{.q = q.data(),
                                .k = k.data(),
                                .v = v.data(),
                                .out = o,
                                .num_queries = d.T,
                                .num_keys = S,
                                .num_heads = d.H,
                                .qk_dim = d.qk,
                                .v_dim = d.v,
                                .softmax_scale = s.softmax_scale,
                                .indices = indices.empty() ? nullptr : indices.data(),
                                .topk = topk};
  s.reference_attention ? mha_prefill_ref(params) : mha_prefill(params, s.pool);
}

// Whether a chunk runs in MHA mode rather than the absorbed (MQA) mode. Decode steps are always
// absorbed (REF's decode path). For prefill chunks the multiply-adds decide: MHA expands every
// cached key through wkv_b once per chunk (S x latent x H x (nope + v)) and then attends with
// qk + v wide heads; the absorbed mode folds wkv_b into each query and output (T x H x latent x
// (nope + v)) and attends with 2 x latent + rope wide heads. Long prompts from position 0 favour
// MHA, short chunks deep into a long context favour the absorbed mode. The MHA kernel applies a
// top-k as a mask over the causal keys (mla.h), so it scans them all; the absorbed kernel reads
// only the selected ones — with a top-k much smaller than the context, the absorbed mode wins.
bool use_mha(PrefillKernel kernel, const Dims& d, int64_t topk) {
  if (d.T == 1) return false;
  if (kernel != PrefillKernel::kAuto) return kernel == PrefillKernel::kMha;
  const double S = double(d.P + d.T);
  const double causal_keys = double(d.P) + 0.5 * double(d.T + 1);  // per row, on average
  const double absorbed_keys = topk > 0 ? std::min(double(topk), causal_keys) : causal_keys;
  const double heads = double(d.T) * double(d.H);
  const double mha = S * double(d.latent) * double(d.H) * double(d.nope + d.v) +
                     heads * causal_keys * double(d.qk + d.v);
  const double absorbed = heads * double(d.latent) * double(d.nope + d.v) +
                          heads * absorbed_keys * double(2 * d.latent + d.rope);
  return mha < absorbed;
}

}  // namespace

void attention_block(const Step& s, int64_t layer, const float* x, float* out) {
  const ModelConfig& c = s.config;
  const AttentionWeights& w = s.weights.layers[size_t(layer)].attn;
  const Dims d = dims_of(s);

  std::vector<float> q_latent, q;
  project_queries(s, w, x, d, q_latent, q);
  write_latents(s, layer, w, x, d);

  // Rows with at most index_topk causal keys attend to all of them either way (forward.h).
  const bool select =
      w.indexer && (s.attention == AttentionMode::kSparse ||
                    (s.attention == AttentionMode::kAuto && d.P + d.T > c.index_topk));
  std::vector<int32_t> indices;
  if (w.indexer) indices = run_indexer(s, layer, *w.indexer, x, q_latent, d, select);

  std::vector<float> o(size_t(d.T * d.H * d.v));
  const int64_t topk = select ? c.index_topk : 0;
  if (use_mha(s.prefill_kernel, d, topk)) {
    mha_attention(s, layer, w, q, indices, topk, d, o.data());
  } else {
    absorbed_attention(s, layer, w, q, indices, topk, d, o.data());
  }
  s.emit("attn_output", o.data(), {d.T, d.H, d.v});
  linear(o.data(), d.T, w.wo, out, s.pool);
  s.emit("attn", out, {d.T, c.hidden_size});
}

}  // namespace dsa::forward_internal
