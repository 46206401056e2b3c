// The FFN half of a layer for training: the dense SwiGLU MLP, or the MoE (sigmoid router with
// DeepSeek's group-limited selection, routed experts weighted by the normalised gate scores, the
// shared expert), with the optional sequence-wise balance loss.
#include <algorithm>

#include "core/error.h"
#include "model/moe_gate_config.h"
#include "model/train_internal.h"
#include "ops/moe/moe_train.h"
#include "ops/moe/swiglu_train.h"

namespace dsa::train_internal {
namespace {

// A SwiGLU MLP (gate_proj, up_proj, down_proj under `p`) on x [n, D]: y [n, D], keeping the
// gate, up and hidden activations [n, I].
void mlp_forward(const Context& c, const std::string& p, int64_t inter, const float* x, int64_t n,
                 Buffer& gate, Buffer& up, Buffer& h, float* y) {
  const int64_t D = c.config.hidden_size;
  gate.resize(size_t(n * inter));
  up.resize(size_t(n * inter));
  h.resize(size_t(n * inter));
  linear(c, x, n, c.param(p + "gate_proj.weight"), inter, D, gate.data());
  linear(c, x, n, c.param(p + "up_proj.weight"), inter, D, up.data());
  swiglu_train_forward(
      SwigluTrain<float>{.gate = gate.data(), .up = up.data(), .h = h.data(), .n = n * inter},
      c.pool);
  linear(c, h.data(), n, c.param(p + "down_proj.weight"), D, inter, y);
}

// dx [n, D] += the gradient through the MLP, given dy [n, D].
void mlp_backward(const Context& c, const std::string& p, int64_t inter, const float* x, int64_t n,
                  const Buffer& gate, const Buffer& up, const Buffer& h, const float* dy,
                  float* dx) {
  const int64_t D = c.config.hidden_size;
  Buffer dh(size_t(n * inter), 0.0f), dgate(size_t(n * inter)), dup(size_t(n * inter));
  linear_back(c, h.data(), n, c.param(p + "down_proj.weight"), D, inter, dy, dh.data(),
              c.grad(p + "down_proj.weight"));
  swiglu_backward(SwigluTrain<float>{.gate = gate.data(),
                                     .up = up.data(),
                                     .dh = dh.data(),
                                     .dgate = dgate.data(),
                                     .dup = dup.data(),
                                     .n = n * inter},
                  c.pool);
  linear_back(c, x, n, c.param(p + "gate_proj.weight"), inter, D, dgate.data(), dx,
              c.grad(p + "gate_proj.weight"));
  linear_back(c, x, n, c.param(p + "up_proj.weight"), inter, D, dup.data(), dx,
              c.grad(p + "up_proj.weight"));
}

// f(r) for r < n on the pool: work on row r only.
template <class F>
void for_rows(const Context& c, int64_t n, const F& f) {
  c.pool.parallel_for(n, 32, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

}  // namespace

void ffn_forward(const Context& c, int64_t layer, const float* f, float* out, FfnSaved& s,
                 TrainStepResult& result) {
  const ModelConfig& m = c.config;
  const int64_t N = c.rows(), D = m.hidden_size;
  const std::string p = layer_prefix(layer) + "mlp.";
  if (!m.is_moe_layer(layer)) {
    mlp_forward(c, p, m.intermediate_size, f, N, s.gate, s.up, s.h, out);
    return;
  }
  const int64_t E = m.n_routed_experts, k = m.num_experts_per_tok;
  s.logits.resize(size_t(N * E));
  linear(c, f, N, c.param(p + "gate.weight"), E, D, s.logits.data(), ProductPrecision::kFp32);
  s.expert_ids.resize(size_t(N * k));
  s.expert_weights.resize(size_t(N * k));
  moe_gate_train_forward(MoeGateTrain<float>{.logits = s.logits.data(),
                                             .bias = c.param(p + "gate.e_score_correction_bias"),
                                             .config = moe_gate_config(m),
                                             .tokens = N,
                                             .expert_ids = s.expert_ids.data(),
                                             .expert_weights = s.expert_weights.data()},
                         c.pool);
  std::vector<int64_t>& load = result.expert_load[static_cast<size_t>(layer)];
  load.assign(static_cast<size_t>(E), 0);
  count_expert_load(s.expert_ids.data(), N, k, E, load.data());

  // Routed experts in ascending id, each over its tokens in order; the shared expert last.
  std::fill(out, out + N * D, 0.0f);
  s.experts.assign(static_cast<size_t>(E), ExpertSaved{});
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < k; ++j) {
      ExpertSaved& e = s.experts[size_t(s.expert_ids[size_t(n * k + j)])];
      e.rows.push_back(int32_t(n));
      e.slots.push_back(int32_t(j));
    }
  }
  for (int64_t id = 0; id < E; ++id) {
    ExpertSaved& e = s.experts[static_cast<size_t>(id)];
    const int64_t n = int64_t(e.rows.size());
    if (n == 0) continue;
    e.x.resize(size_t(n * D));
    for_rows(c, n, [&](int64_t r) {
      std::copy_n(f + int64_t(e.rows[static_cast<size_t>(r)]) * D, D, e.x.data() + r * D);
    });
    e.y.resize(size_t(n * D));
    mlp_forward(c, p + "experts." + std::to_string(id) + ".", m.moe_intermediate_size, e.x.data(),
                n, e.gate, e.up, e.h, e.y.data());
    // An expert's rows are distinct tokens; experts add in id order.
    for_rows(c, n, [&](int64_t r) {
      const int64_t row = e.rows[static_cast<size_t>(r)];
      const float g = s.expert_weights[size_t(row * k + e.slots[static_cast<size_t>(r)])];
      float* dst = out + row * D;
      const float* src = e.y.data() + r * D;
      for (int64_t i = 0; i < D; ++i) dst[i] += g * src[i];
    });
  }
  if (m.n_shared_experts > 0) {
    Buffer shared(size_t(N * D));
    mlp_forward(c, p + "shared_experts.", m.shared_intermediate_size(), f, N, s.gate, s.up, s.h,
                shared.data());
    c.pool.parallel_for(N * D, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] += shared[static_cast<size_t>(i)];
    });
  }
  if (c.options.balance_alpha > 0.0f) {
    for (int64_t b = 0; b < c.sequences; ++b) {
      float loss = 0.0f;
      moe_balance_loss(MoeBalanceLoss<float>{.logits = s.logits.data() + b * c.seq_len * E,
                                             .expert_ids = s.expert_ids.data() + b * c.seq_len * k,
                                             .tokens = c.seq_len,
                                             .experts = E,
                                             .k = k,
                                             .alpha = c.options.balance_alpha,
                                             .loss = &loss},
                       c.pool);
      result.balance_loss += double(loss) / double(c.sequences);
    }
  }
}

void ffn_backward(const Context& c, int64_t layer, const float* f, const float* dout, FfnSaved& s,
                  float* df) {
  const ModelConfig& m = c.config;
  const int64_t N = c.rows(), D = m.hidden_size;
  const std::string p = layer_prefix(layer) + "mlp.";
  if (!m.is_moe_layer(layer)) {
    mlp_backward(c, p, m.intermediate_size, f, N, s.gate, s.up, s.h, dout, df);
    return;
  }
  const int64_t E = m.n_routed_experts, k = m.num_experts_per_tok;
  if (m.n_shared_experts > 0) {
    mlp_backward(c, p + "shared_experts.", m.shared_intermediate_size(), f, N, s.gate, s.up, s.h,
                 dout, df);
  }
  Buffer dweights(size_t(N * k), 0.0f);
  for (int64_t id = 0; id < E; ++id) {
    ExpertSaved& e = s.experts[static_cast<size_t>(id)];
    const int64_t n = int64_t(e.rows.size());
    if (n == 0) continue;
    Buffer dy(size_t(n * D)), dx(size_t(n * D), 0.0f);
    for_rows(c, n, [&](int64_t r) {
      const int64_t row = e.rows[static_cast<size_t>(r)],
                    slot = row * k + e.slots[static_cast<size_t>(r)];
      const float g = s.expert_weights[static_cast<size_t>(slot)];
      const float* d = dout + row * D;
      const float* y = e.y.data() + r * D;
      double dg = 0.0;
      for (int64_t i = 0; i < D; ++i) {
        dy[size_t(r * D + i)] = g * d[i];
        dg += double(d[i]) * double(y[i]);
      }
      dweights[static_cast<size_t>(slot)] = float(dg);
    });
    mlp_backward(c, p + "experts." + std::to_string(id) + ".", m.moe_intermediate_size, e.x.data(),
                 n, e.gate, e.up, e.h, dy.data(), dx.data());
    for_rows(c, n, [&](int64_t r) {
      float* dst = df + int64_t(e.rows[static_cast<size_t>(r)]) * D;
      const float* src = dx.data() + r * D;
      for (int64_t i = 0; i < D; ++i) dst[i] += src[i];
    });
  }
  Buffer dlogits(size_t(N * E), 0.0f);
  moe_gate_backward(MoeGateTrain<float>{.logits = s.logits.data(),
                                        .bias = c.param(p + "gate.e_score_correction_bias"),
                                        .config = moe_gate_config(m),
                                        .tokens = N,
                                        .expert_ids = s.expert_ids.data(),
                                        .expert_weights = s.expert_weights.data(),
                                        .dweights = dweights.data(),
                                        .dlogits = dlogits.data()},
                    c.pool);
  if (c.options.balance_alpha > 0.0f) {
    for (int64_t b = 0; b < c.sequences; ++b) {
      float loss = 0.0f;
      moe_balance_loss(
          MoeBalanceLoss<float>{.logits = s.logits.data() + b * c.seq_len * E,
                                .expert_ids = s.expert_ids.data() + b * c.seq_len * k,
                                .tokens = c.seq_len,
                                .experts = E,
                                .k = k,
                                .alpha = c.options.balance_alpha,
                                .grad_scale = c.options.grad_scale / float(c.sequences),
                                .loss = &loss,
                                .dlogits = dlogits.data() + b * c.seq_len * E},
          c.pool);
    }
  }
  linear_back(c, f, N, c.param(p + "gate.weight"), E, D, dlogits.data(), df,
              c.grad(p + "gate.weight"), ProductPrecision::kFp32);
}

}  // namespace dsa::train_internal
