// What the pieces of one forward call share (forward.cc, attention_block.cc, ffn_block.cc).
// Activations travel as float arrays holding bf16 values (the GEMMs' interface); the norm, RoPE
// and indexer ops read and write bf16 arrays, hence the small conversion helpers.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "core/float_formats.h"
#include "model/forward.h"

namespace dsa::forward_internal {

// One sequence's rows of a batched call: rows [row, row + tokens) of every activation array,
// at positions start .. start + tokens - 1 of its cache.
struct SequenceRows {
  KvCache* cache;
  int64_t start;
  int64_t row;
  int64_t tokens;
};

// One forward call over the rows of one or more sequences. Row-wise work (norms, projections,
// the FFN) runs on all rows at once, so each weight is read once per call; what depends on a
// sequence's positions or cache (RoPE, cache writes, the indexer, attention) runs per sequence.
struct Step {
  const ModelConfig& config;
  const ModelWeights& weights;
  const RopeTable& rope;
  float softmax_scale;
  std::span<const SequenceRows> sequences;
  int64_t tokens;  // rows in all: the sum of the sequences' tokens
  AttentionMode attention;
  PrefillKernel prefill_kernel;
  bool reference_attention;      // the scalar attention kernels that round as REF does
  const IntermediateSink* dump;  // null: no dumping (only set for a single sequence)
  ThreadPool& pool;
  std::string prefix;  // of dumped names: "layers.3." inside a layer, "" outside

  // Passes `data` [shape] to the dump sink as "<prefix><name>".
  void emit(const std::string& name, const float* data, Shape shape) const;
  void emit(const std::string& name, const int32_t* data, Shape shape) const;
};

// y [m, out] = REF's linear(x [m, in], w): bf16 values out, except fp32 for an F32 weight.
void linear(const float* x, int64_t m, const LinearWeight& w, float* y, ThreadPool& pool);
// y [m, out] = x · Wᵀ in fp32 with no output rounding (REF's fp32 linears on x.float():
// indexer weights_proj, the LM head).
void linear_fp32(const float* x, int64_t m, const LinearWeight& w, float* y, ThreadPool& pool);

std::vector<bf16> to_bf16(const float* x, size_t n);
void to_float(const bf16* x, size_t n, float* out);

// RMSNorm of rows of float bf16 values without a residual, in place.
void rms_norm_rows(float* x, int64_t rows, const std::vector<float>& weight, ThreadPool& pool);

// The attention block of `layer` on x [rows, hidden] (attn_norm output), writing out [rows,
// hidden] and each sequence's cache rows of the layer.
void attention_block(const Step& step, int64_t layer, const float* x, float* out);
// The FFN block (dense MLP or MoE) of `layer`: x, out [rows, hidden].
void ffn_block(const Step& step, int64_t layer, const float* x, float* out);

}  // namespace dsa::forward_internal
