// What the pieces of the training graph share (train_graph.cc, train_attention.cc, train_ffn.cc):
// the step's context, thin wrappers over the training ops, and each block's saved activations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/train_graph.h"
#include "ops/rope/rope.h"

namespace dsa::train_internal {

using Buffer = std::vector<float>;

struct Context {
  const ModelConfig& config;
  const ParameterBuffer& params;
  ParameterBuffer* grads;  // null: forward only
  const TrainStepOptions& options;
  const RopeTable& rope;
  float softmax_scale;
  int64_t sequences;  // B
  int64_t seq_len;    // T
  ThreadPool& pool;

  int64_t rows() const { return sequences * seq_len; }  // N = B * T
  const float* param(const std::string& name) const { return params.data(name); }
  // The gradient of `name`, or null without gradients or for a frozen parameter.
  float* grad(const std::string& name) const;
  // Whether gradients flow into the main model (everything but the indexers).
  bool main_backward() const { return grads && options.lm_loss; }
};

std::string layer_prefix(int64_t layer);  // "model.layers.3."

// A product's precision: the step's (TrainStepOptions::matmul), or always fp32 (the MoE router,
// whose logits pick the experts: a bf16 rounding there can flip a routing decision, and its
// product is tiny).
enum class ProductPrecision { kStep, kFp32 };

// y [m, n] = x [m, k] · Wᵀ.
void linear(const Context& c, const float* x, int64_t m, const float* w, int64_t n, int64_t k,
            float* y, ProductPrecision precision = ProductPrecision::kStep);
// dx [m, k] += dy · W (dx may be null), dW [n, k] += dyᵀ · x (dw may be null).
void linear_back(const Context& c, const float* x, int64_t m, const float* w, int64_t n, int64_t k,
                 const float* dy, float* dx, float* dw,
                 ProductPrecision precision = ProductPrecision::kStep);

// RMSNorm of rows [m, d] with the weight `w`: y and the saved rstd [m].
void rms_norm(const Context& c, const float* x, int64_t m, int64_t d, const float* w, float* y,
              float* rstd);
// dx [m, d] = the gradient w.r.t. x (OVERWRITTEN); dw += (may be null).
void rms_norm_back(const Context& c, const float* x, int64_t m, int64_t d, const float* w,
                   const float* rstd, const float* dy, float* dx, float* dw);

// RoPE in place on x [N, heads, row] at [offset, offset + rope dims), every sequence of the
// batch from position 0; `backward` rotates by −θ (the transpose).
void rope(const Context& c, float* x, int64_t heads, int64_t row, int64_t offset, RopeLayout layout,
          bool backward);

// Activations of one attention block, kept for its backward.
struct AttentionSaved {
  Buffer cq_pre, rstd_q, cq;     // [N, q_lora], [N], [N, q_lora] (query compression)
  Buffer q;                      // [N, H, qk] after RoPE
  Buffer c_pre, rstd_kv, c;      // [N, latent], [N], [N, latent]
  Buffer k, v;                   // [N, H, qk], [N, H, v]
  Buffer o, lse;                 // [N, H, v], [N, H]
  std::vector<int32_t> indices;  // [N, index_topk] for sparse attention, else empty
};

// The attention block of `layer` on a [N, D] (attn_norm output): out [N, D]. Runs the indexer
// when the step needs it (sparse selection, indexer loss), and with indexer_loss does the
// indexer's whole loss and backward here (its inputs are detached from the main graph).
void attention_forward(const Context& c, int64_t layer, const float* a, float* out,
                       AttentionSaved& saved, TrainStepResult& result);
// da [N, D] += the gradient w.r.t. a, given dout [N, D]; parameter gradients accumulate.
void attention_backward(const Context& c, int64_t layer, const float* a, const float* dout,
                        AttentionSaved& saved, float* da);

struct ExpertSaved {
  std::vector<int32_t> rows;   // tokens routed here, ascending
  std::vector<int32_t> slots;  // their slot in expert_ids
  Buffer x, gate, up, h, y;    // [n, D], [n, I] x3, [n, D]
};
struct FfnSaved {
  Buffer gate, up, h;               // dense MLP or the shared expert: [N, I]
  Buffer logits;                    // MoE: [N, E] router logits
  std::vector<int32_t> expert_ids;  // [N, k]
  Buffer expert_weights;            // [N, k]
  std::vector<ExpertSaved> experts;
};

void ffn_forward(const Context& c, int64_t layer, const float* f, float* out, FfnSaved& saved,
                 TrainStepResult& result);
void ffn_backward(const Context& c, int64_t layer, const float* f, const float* dout,
                  FfnSaved& saved, float* df);

}  // namespace dsa::train_internal
