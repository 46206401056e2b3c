// MLA in MHA form for training, with the lightning indexer (docs/training-engine.md): queries
// through the q latent, the kv latent and its decompression into per-head k_nope and v, k_pe
// shared by the heads, dense or top-k causal attention, the output projection; and the indexer's
// scores, selection and KL loss.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "core/error.h"
#include "model/train_internal.h"
#include "ops/attention/mha_train.h"
#include "ops/indexer/indexer_train.h"
#include "ops/norms/norms_train.h"
#include "ops/topk/topk.h"

namespace dsa::train_internal {
namespace {

// f(n) for every token row n < N on the pool: copies and sums that touch row n only.
template <class F>
void for_rows(const Context& c, int64_t N, const F& f) {
  c.pool.parallel_for(N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) f(n);
  });
}

struct Dims {
  int64_t N, T, H, nope, rope, qk, v, latent, q_lora;
};

Dims dims_of(const Context& c) {
  const ModelConfig& m = c.config;
  return {.N = c.rows(),
          .T = c.seq_len,
          .H = m.num_attention_heads,
          .nope = m.qk_nope_head_dim,
          .rope = m.qk_rope_head_dim,
          .qk = m.qk_head_dim(),
          .v = m.v_head_dim,
          .latent = m.kv_lora_rank,
          .q_lora = m.q_lora_rank};
}

// The indexer's activations; only the scores' backward and the parameter gradients read them.
struct IndexerSaved {
  Buffer q;                  // [N, Hi, Di] after RoPE
  Buffer k_pre, mean, rstd;  // [N, Di] wk output, LayerNorm statistics [N]
  Buffer k;                  // [N, Di] after LayerNorm and RoPE
  Buffer w;                  // [N, Hi] head weights with Hi^-0.5 * Di^-0.5
};

void indexer_inputs(const Context& c, const std::string& p, const float* a, const float* cq,
                    IndexerSaved& s) {
  const ModelConfig& m = c.config;
  const int64_t N = c.rows(), D = m.hidden_size, Hi = m.index_n_heads, Di = m.index_head_dim;
  s.q.resize(size_t(N * Hi * Di));
  linear(c, cq, N, c.param(p + "wq_b.weight"), Hi * Di, m.q_lora_rank, s.q.data());
  rope(c, s.q.data(), Hi, Di, 0, RopeLayout::kHalves, false);
  s.k_pre.resize(size_t(N * Di));
  linear(c, a, N, c.param(p + "wk.weight"), Di, D, s.k_pre.data());
  s.k.resize(size_t(N * Di));
  s.mean.resize(static_cast<size_t>(N));
  s.rstd.resize(static_cast<size_t>(N));
  layer_norm_train_forward(LayerNormTrain<float>{.x = s.k_pre.data(),
                                                 .weight = c.param(p + "k_norm.weight"),
                                                 .bias = c.param(p + "k_norm.bias"),
                                                 .y = s.k.data(),
                                                 .mean = s.mean.data(),
                                                 .rstd = s.rstd.data(),
                                                 .tokens = N,
                                                 .dim = Di,
                                                 .eps = 1e-6f},
                           c.pool);
  rope(c, s.k.data(), 1, Di, 0, RopeLayout::kHalves, false);
  s.w.resize(size_t(N * Hi));
  linear(c, a, N, c.param(p + "weights_proj.weight"), Hi, D, s.w.data());
  const float w_scale = float(1.0 / std::sqrt(double(Hi)) / std::sqrt(double(Di)));
  for (float& x : s.w) x *= w_scale;
}

IndexerScoresTrain<float> scores_params(const Context& c, IndexerSaved& s, int64_t b,
                                        float* scores) {
  const ModelConfig& m = c.config;
  const int64_t T = c.seq_len, Hi = m.index_n_heads, Di = m.index_head_dim;
  return {.q = s.q.data() + b * T * Hi * Di,
          .k = s.k.data() + b * T * Di,
          .w = s.w.data() + b * T * Hi,
          .scores = scores,
          .tokens = T,
          .heads = Hi,
          .dim = Di};
}

// Top-k of every row of every sequence: [N, index_topk], ascending, -1 padded.
std::vector<int32_t> select_keys(const Context& c, IndexerSaved& s) {
  const int64_t T = c.seq_len, k = c.config.index_topk;
  std::vector<int32_t> indices(size_t(c.rows() * k));
  Buffer scores(size_t(T * T));
  for (int64_t b = 0; b < c.sequences; ++b) {
    indexer_scores_train_forward(scores_params(c, s, b, scores.data()), c.pool);
    topk_select({.scores = scores.data(),
                 .indices = indices.data() + b * T * k,
                 .rows = T,
                 .cols = T,
                 .k = k},
                c.pool);
  }
  return indices;
}

// The indexer's target p for sequence b (the main attention summed over heads, L1-normalised)
// over `indices` (topk per row), or over every causal key when indices is null.
AttentionTarget<float> target_params(const Context& c, const AttentionSaved& att, const Dims& d,
                                     int64_t b, const int32_t* indices, int64_t topk, float* p) {
  const int64_t T = d.T;
  return {.q = att.q.data() + b * T * d.H * d.qk,
          .k = att.k.data() + b * T * d.H * d.qk,
          .lse = att.lse.data() + b * T * d.H,
          .indices = indices,
          .topk = topk,
          .p = p,
          .tokens = T,
          .heads = d.H,
          .qk_dim = d.qk,
          .scale = c.softmax_scale};
}

// The indexer's KL loss against the main attention just computed, and its backward into the
// indexer's parameters only (the indexer's inputs are detached).
void indexer_loss(const Context& c, const std::string& p, const float* a, const float* cq,
                  IndexerSaved& s, const AttentionSaved& att, const Dims& d,
                  TrainStepResult& result) {
  const ModelConfig& m = c.config;
  const int64_t T = d.T, N = d.N, Hi = m.index_n_heads, Di = m.index_head_dim;
  const int64_t topk = att.indices.empty() ? 0 : m.index_topk;
  const int64_t indexer_layers = m.num_hidden_layers;  // every V3.2 layer has an indexer
  const float grad_scale = c.options.grad_scale / float(indexer_layers * N);
  Buffer scores(size_t(T * T)), target(size_t(T * T)), dscores(size_t(T * T));
  Buffer dq(size_t(N * Hi * Di)), dk(size_t(N * Di)), dw(size_t(N * Hi));
  std::vector<float>& row_kl = result.indexer_row_kl.emplace_back(static_cast<size_t>(N), 0.0f);
  double total = 0.0;
  for (int64_t b = 0; b < c.sequences; ++b) {
    const int32_t* indices = topk ? att.indices.data() + b * T * topk : nullptr;
    IndexerScoresTrain<float> sp = scores_params(c, s, b, scores.data());
    indexer_scores_train_forward(sp, c.pool);
    attention_target(target_params(c, att, d, b, indices, topk, target.data()), c.pool);
    indexer_kl_loss(IndexerKlLoss<float>{.scores = scores.data(),
                                         .p = target.data(),
                                         .indices = indices,
                                         .topk = topk,
                                         .row_loss = row_kl.data() + b * T,
                                         .dscores = c.grads ? dscores.data() : nullptr,
                                         .grad_scale = grad_scale,
                                         .tokens = T},
                    c.pool);
    for (int64_t t = 0; t < T; ++t) total += row_kl[size_t(b * T + t)];
    if (!c.grads) continue;
    sp.dscores = dscores.data();
    sp.dq = dq.data() + b * T * Hi * Di;
    sp.dk = dk.data() + b * T * Di;
    sp.dw = dw.data() + b * T * Hi;
    indexer_scores_backward(sp, c.pool);
  }
  result.indexer_loss += total / double(indexer_layers * N);
  result.indexer_rows += N;
  if (!c.grads) return;

  const int64_t D = m.hidden_size;
  const float w_scale = float(1.0 / std::sqrt(double(Hi)) / std::sqrt(double(Di)));
  for (float& x : dw) x *= w_scale;
  linear_back(c, a, N, c.param(p + "weights_proj.weight"), Hi, D, dw.data(), nullptr,
              c.grad(p + "weights_proj.weight"));
  rope(c, dk.data(), 1, Di, 0, RopeLayout::kHalves, true);
  Buffer dk_pre(size_t(N * Di));
  layer_norm_backward(LayerNormTrain<float>{.x = s.k_pre.data(),
                                            .weight = c.param(p + "k_norm.weight"),
                                            .bias = c.param(p + "k_norm.bias"),
                                            .mean = s.mean.data(),
                                            .rstd = s.rstd.data(),
                                            .dy = dk.data(),
                                            .dx = dk_pre.data(),
                                            .dweight = c.grad(p + "k_norm.weight"),
                                            .dbias = c.grad(p + "k_norm.bias"),
                                            .tokens = N,
                                            .dim = Di,
                                            .eps = 1e-6f},
                      c.pool);
  linear_back(c, a, N, c.param(p + "wk.weight"), Di, D, dk_pre.data(), nullptr,
              c.grad(p + "wk.weight"));
  rope(c, dq.data(), Hi, Di, 0, RopeLayout::kHalves, true);
  linear_back(c, cq, N, c.param(p + "wq_b.weight"), Hi * Di, m.q_lora_rank, dq.data(), nullptr,
              c.grad(p + "wq_b.weight"));
}

// result.indexer_recall[layer]: the share of the dense attention's mass p_t (summed over heads,
// L1-normalised) on the indexer's top-k of each row. Dense attention only: att.lse is then the
// log-sum-exp over every causal key.
void record_indexer_recall(const Context& c, int64_t layer, IndexerSaved& s,
                           const AttentionSaved& att, const Dims& d, TrainStepResult& result) {
  const int64_t T = d.T, k = c.config.index_topk;
  std::vector<float>& recall = result.indexer_recall[size_t(layer)];
  std::vector<float>& oracle = result.indexer_oracle_recall[size_t(layer)];
  recall.assign(size_t(d.N), 1.0f);
  oracle.assign(size_t(d.N), 1.0f);
  if (T <= k) return;  // every row has at most k keys: all selected, recall 1
  const std::vector<int32_t> selected = select_keys(c, s);
  Buffer target(size_t(T * T));
  for (int64_t b = 0; b < c.sequences; ++b) {
    // Every causal key (no indices): the warm-up's target.
    attention_target(target_params(c, att, d, b, nullptr, 0, target.data()), c.pool);
    c.pool.parallel_for(T - k, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> row_p;
      for (int64_t t = k + begin; t < k + end; ++t) {  // rows t < k: all keys are selected
        const int32_t* row = selected.data() + (b * T + t) * k;
        double mass = 0.0;
        for (int64_t j = 0; j < k; ++j) {
          if (row[j] >= 0) mass += target[size_t(t * T + row[j])];
        }
        recall[size_t(b * T + t)] = float(mass);
        row_p.assign(target.data() + t * T, target.data() + t * T + t + 1);
        std::nth_element(row_p.begin(), row_p.begin() + (k - 1), row_p.end(), std::greater<>());
        double best = 0.0;
        for (int64_t j = 0; j < k; ++j) best += row_p[size_t(j)];
        oracle[size_t(b * T + t)] = float(best);
      }
    });
  }
}

MhaTrain<float> mha_params(const Context& c, const AttentionSaved& s, const Dims& d, int64_t b) {
  const int64_t T = d.T;
  const int64_t topk = s.indices.empty() ? 0 : c.config.index_topk;
  return {.q = s.q.data() + b * T * d.H * d.qk,
          .k = s.k.data() + b * T * d.H * d.qk,
          .v = s.v.data() + b * T * d.H * d.v,
          .indices = topk ? s.indices.data() + b * T * topk : nullptr,
          .topk = topk,
          .tokens = T,
          .heads = d.H,
          .qk_dim = d.qk,
          .v_dim = d.v,
          .scale = c.softmax_scale};
}

}  // namespace

void attention_forward(const Context& c, int64_t layer, const float* a, float* out,
                       AttentionSaved& s, TrainStepResult& result) {
  const Dims d = dims_of(c);
  const int64_t N = d.N, D = c.config.hidden_size;
  const std::string p = layer_prefix(layer) + "self_attn.";

  s.q.resize(size_t(N * d.H * d.qk));
  if (d.q_lora > 0) {
    s.cq_pre.resize(size_t(N * d.q_lora));
    linear(c, a, N, c.param(p + "q_a_proj.weight"), d.q_lora, D, s.cq_pre.data());
    s.rstd_q.resize(static_cast<size_t>(N));
    s.cq.resize(size_t(N * d.q_lora));
    rms_norm(c, s.cq_pre.data(), N, d.q_lora, c.param(p + "q_a_layernorm.weight"), s.cq.data(),
             s.rstd_q.data());
    linear(c, s.cq.data(), N, c.param(p + "q_b_proj.weight"), d.H * d.qk, d.q_lora, s.q.data());
  } else {
    linear(c, a, N, c.param(p + "q_proj.weight"), d.H * d.qk, D, s.q.data());
  }
  rope(c, s.q.data(), d.H, d.qk, d.nope, RopeLayout::kInterleaved, false);

  const int64_t kv_row = d.latent + d.rope;
  Buffer kv(size_t(N * kv_row));
  linear(c, a, N, c.param(p + "kv_a_proj_with_mqa.weight"), kv_row, D, kv.data());
  s.c_pre.resize(size_t(N * d.latent));
  Buffer k_pe(size_t(N * d.rope));
  for_rows(c, N, [&](int64_t n) {
    std::copy_n(kv.data() + n * kv_row, d.latent, s.c_pre.data() + n * d.latent);
    std::copy_n(kv.data() + n * kv_row + d.latent, d.rope, k_pe.data() + n * d.rope);
  });
  s.rstd_kv.resize(static_cast<size_t>(N));
  s.c.resize(size_t(N * d.latent));
  rms_norm(c, s.c_pre.data(), N, d.latent, c.param(p + "kv_a_layernorm.weight"), s.c.data(),
           s.rstd_kv.data());
  rope(c, k_pe.data(), 1, d.rope, 0, RopeLayout::kInterleaved, false);
  const int64_t per_head = d.nope + d.v;
  Buffer kvb(size_t(N * d.H * per_head));
  linear(c, s.c.data(), N, c.param(p + "kv_b_proj.weight"), d.H * per_head, d.latent, kvb.data());
  s.k.resize(size_t(N * d.H * d.qk));
  s.v.resize(size_t(N * d.H * d.v));
  for_rows(c, N, [&](int64_t n) {
    for (int64_t h = 0; h < d.H; ++h) {
      const float* src = kvb.data() + (n * d.H + h) * per_head;
      float* k = s.k.data() + (n * d.H + h) * d.qk;
      std::copy_n(src, d.nope, k);
      std::copy_n(k_pe.data() + n * d.rope, d.rope, k + d.nope);
      std::copy_n(src + d.nope, d.v, s.v.data() + (n * d.H + h) * d.v);
    }
  });

  const bool has_indexer = c.config.has_indexer();
  const bool sparse = c.options.attention == AttentionMode::kSparse;
  IndexerSaved indexer;
  const std::string ip = p + "indexer.";
  if (has_indexer && (sparse || c.options.indexer_loss || c.options.record_indexer_recall)) {
    indexer_inputs(c, ip, a, s.cq.data(), indexer);
    if (sparse) s.indices = select_keys(c, indexer);
  }

  s.o.resize(size_t(N * d.H * d.v));
  s.lse.resize(size_t(N * d.H));
  for (int64_t b = 0; b < c.sequences; ++b) {
    MhaTrain<float> mp = mha_params(c, s, d, b);
    mp.out = s.o.data() + b * d.T * d.H * d.v;
    mp.lse = s.lse.data() + b * d.T * d.H;
    mha_train_forward(mp, c.pool);
  }
  linear(c, s.o.data(), N, c.param(p + "o_proj.weight"), D, d.H * d.v, out);

  if (has_indexer && c.options.indexer_loss) {
    indexer_loss(c, ip, a, s.cq.data(), indexer, s, d, result);
  }
  if (has_indexer && c.options.record_indexer_recall) {
    record_indexer_recall(c, layer, indexer, s, d, result);
  }
}

void attention_backward(const Context& c, int64_t layer, const float* a, const float* dout,
                        AttentionSaved& s, float* da) {
  const Dims d = dims_of(c);
  const int64_t N = d.N, D = c.config.hidden_size;
  const std::string p = layer_prefix(layer) + "self_attn.";

  Buffer d_o(size_t(N * d.H * d.v), 0.0f);
  linear_back(c, s.o.data(), N, c.param(p + "o_proj.weight"), D, d.H * d.v, dout, d_o.data(),
              c.grad(p + "o_proj.weight"));
  Buffer dq(size_t(N * d.H * d.qk)), dk(size_t(N * d.H * d.qk)), dv(size_t(N * d.H * d.v));
  for (int64_t b = 0; b < c.sequences; ++b) {
    MhaTrain<float> mp = mha_params(c, s, d, b);
    mp.out = s.o.data() + b * d.T * d.H * d.v;
    mp.lse = s.lse.data() + b * d.T * d.H;
    mp.dout = d_o.data() + b * d.T * d.H * d.v;
    mp.dq = dq.data() + b * d.T * d.H * d.qk;
    mp.dk = dk.data() + b * d.T * d.H * d.qk;
    mp.dv = dv.data() + b * d.T * d.H * d.v;
    mha_backward(mp, c.pool);
  }

  // k = [k_nope (from kv_b) | k_pe (shared by the heads)], v from kv_b.
  const int64_t per_head = d.nope + d.v, kv_row = d.latent + d.rope;
  Buffer dkvb(size_t(N * d.H * per_head));
  Buffer dkv(size_t(N * kv_row), 0.0f);
  for_rows(c, N, [&](int64_t n) {
    float* dpe = dkv.data() + n * kv_row + d.latent;
    for (int64_t h = 0; h < d.H; ++h) {  // heads in order: a fixed sum
      const float* dkr = dk.data() + (n * d.H + h) * d.qk;
      float* dst = dkvb.data() + (n * d.H + h) * per_head;
      std::copy_n(dkr, d.nope, dst);
      std::copy_n(dv.data() + (n * d.H + h) * d.v, d.v, dst + d.nope);
      for (int64_t i = 0; i < d.rope; ++i) dpe[i] += dkr[d.nope + i];
    }
  });
  Buffer dc(size_t(N * d.latent), 0.0f);
  linear_back(c, s.c.data(), N, c.param(p + "kv_b_proj.weight"), d.H * per_head, d.latent,
              dkvb.data(), dc.data(), c.grad(p + "kv_b_proj.weight"));
  Buffer dc_pre(size_t(N * d.latent));
  rms_norm_back(c, s.c_pre.data(), N, d.latent, c.param(p + "kv_a_layernorm.weight"),
                s.rstd_kv.data(), dc.data(), dc_pre.data(), c.grad(p + "kv_a_layernorm.weight"));
  Buffer dk_pe(size_t(N * d.rope));
  for_rows(c, N, [&](int64_t n) {
    std::copy_n(dkv.data() + n * kv_row + d.latent, d.rope, dk_pe.data() + n * d.rope);
  });
  rope(c, dk_pe.data(), 1, d.rope, 0, RopeLayout::kInterleaved, true);
  for_rows(c, N, [&](int64_t n) {
    std::copy_n(dc_pre.data() + n * d.latent, d.latent, dkv.data() + n * kv_row);
    std::copy_n(dk_pe.data() + n * d.rope, d.rope, dkv.data() + n * kv_row + d.latent);
  });
  linear_back(c, a, N, c.param(p + "kv_a_proj_with_mqa.weight"), kv_row, D, dkv.data(), da,
              c.grad(p + "kv_a_proj_with_mqa.weight"));

  rope(c, dq.data(), d.H, d.qk, d.nope, RopeLayout::kInterleaved, true);
  if (d.q_lora > 0) {
    Buffer dcq(size_t(N * d.q_lora), 0.0f);
    linear_back(c, s.cq.data(), N, c.param(p + "q_b_proj.weight"), d.H * d.qk, d.q_lora, dq.data(),
                dcq.data(), c.grad(p + "q_b_proj.weight"));
    Buffer dcq_pre(size_t(N * d.q_lora));
    rms_norm_back(c, s.cq_pre.data(), N, d.q_lora, c.param(p + "q_a_layernorm.weight"),
                  s.rstd_q.data(), dcq.data(), dcq_pre.data(), c.grad(p + "q_a_layernorm.weight"));
    linear_back(c, a, N, c.param(p + "q_a_proj.weight"), d.q_lora, D, dcq_pre.data(), da,
                c.grad(p + "q_a_proj.weight"));
  } else {
    linear_back(c, a, N, c.param(p + "q_proj.weight"), d.H * d.qk, D, dq.data(), da,
                c.grad(p + "q_proj.weight"));
  }
}

}  // namespace dsa::train_internal
