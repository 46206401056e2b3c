#include "model/weights.h"

#include <fmt/format.h>

#include <string>

#include "core/error.h"
#include "core/fp8_quant.h"
#include "model/tensor_layout.h"

namespace dsa {
namespace {

constexpr size_t kMismatchesShown = 12;

bool is_optional_gate_bias(const LayoutMismatch& m) {
  return m.kind == LayoutMismatch::Kind::kMissing &&
         m.name.ends_with(".mlp.gate.e_score_correction_bias");
}

// Every disagreement between config.json and the checkpoint, as one error.
void check_layout(const ModelConfig& config, const Checkpoint& checkpoint,
                  const std::filesystem::path& dir) {
  std::vector<LayoutMismatch> problems =
      compare_with_checkpoint(checkpoint_tensors(model_parameters(config)), checkpoint);
  std::erase_if(problems, is_optional_gate_bias);
  if (problems.empty()) return;
  std::string list;
  for (size_t i = 0; i < problems.size() && i < kMismatchesShown; ++i) {
    list += "\n  " + problems[i].describe();
  }
  if (problems.size() > kMismatchesShown) {
    list += fmt::format("\n  ... and {} more", problems.size() - kMismatchesShown);
  }
  fail(
      "{}: the checkpoint does not match config.json ({} problem{}):{}\n(`dsa inspect {}` lists "
      "them all)",
      dir.string(), problems.size(), problems.size() == 1 ? "" : "s", list, dir.string());
}

// Views into the checkpoint by Hugging Face name; the layout check has already run, so shapes and
// dtypes are those of tensor_layout.h.
class Reader {
 public:
  Reader(const Checkpoint& checkpoint, ThreadPool& pool) : checkpoint_(checkpoint), pool_(pool) {}

  LinearWeight linear(const std::string& name) const {
    const TensorView view = checkpoint_.view(name);
    LinearWeight w;
    w.data = view.raw_data();
    w.dtype = view.dtype();
    w.out_features = view.shape()[0];
    w.in_features = view.shape()[1];
    if (w.dtype == DType::F8_E4M3) {
      w.scale = checkpoint_.view(name + "_scale_inv").data<float>();
    }
    return w;
  }

  std::vector<float> floats(const std::string& name) const {
    const TensorView view = checkpoint_.view(name);
    std::vector<float> out(size_t(view.numel()));
    if (view.dtype() == DType::F32) {
      const float* src = view.data<float>();
      std::copy(src, src + out.size(), out.begin());
    } else {
      const bf16* src = view.data<bf16>();
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(src[i]);
    }
    return out;
  }

  bool contains(const std::string& name) const { return checkpoint_.contains(name); }

  SwigluExpertWeights mlp(const std::string& prefix) const {
    return {.w1 = linear(prefix + "gate_proj.weight"),
            .w2 = linear(prefix + "down_proj.weight"),
            .w3 = linear(prefix + "up_proj.weight")};
  }

  // REF's weight_dequant: bf16(fp8(W) * S) per 128x128 block, or the bf16 weight itself.
  std::vector<bf16> dequantized_bf16(const LinearWeight& w) const {
    const int64_t rows = w.out_features;
    const int64_t cols = w.in_features;
    std::vector<bf16> out(size_t(rows * cols));
    if (w.dtype == DType::BF16) {
      const bf16* src = static_cast<const bf16*>(w.data);
      std::copy(src, src + out.size(), out.begin());
      return out;
    }
    DSA_CHECK(w.dtype == DType::F8_E4M3, "wkv_b must be FP8 or BF16");
    const auto* codes = static_cast<const fp8_e4m3*>(w.data);
    const int64_t block_rows = weight_scale_rows(rows);
    pool_.parallel_for(block_rows, 1, [&](int64_t begin, int64_t end) {
      const int64_t row_begin = begin * kFp8BlockSize;
      const int64_t row_end = std::min(rows, end * kFp8BlockSize);
      std::vector<float> values(size_t((row_end - row_begin) * cols));
      dequantize_weight_fp8(codes + row_begin * cols, w.scale + begin * weight_scale_cols(cols),
                            row_end - row_begin, cols, values.data());
      for (size_t i = 0; i < values.size(); ++i) {
        out[size_t(row_begin * cols) + i] = float_to_bf16(values[i]);
      }
    });
    return out;
  }

 private:
  const Checkpoint& checkpoint_;
  ThreadPool& pool_;
};

AttentionWeights load_attention(const Reader& r, const ModelConfig& c, const std::string& p) {
  AttentionWeights a;
  if (c.has_q_lora()) {
    a.wq_a = r.linear(p + "q_a_proj.weight");
    a.q_norm = r.floats(p + "q_a_layernorm.weight");
    a.wq_b = r.linear(p + "q_b_proj.weight");
  } else {
    a.wq_b = r.linear(p + "q_proj.weight");
  }
  a.wkv_a = r.linear(p + "kv_a_proj_with_mqa.weight");
  a.kv_norm = r.floats(p + "kv_a_layernorm.weight");
  a.wkv_b = r.linear(p + "kv_b_proj.weight");
  a.wkv_b_bf16 = r.dequantized_bf16(a.wkv_b);
  a.wo = r.linear(p + "o_proj.weight");
  if (c.has_indexer()) {
    const std::string ip = p + "indexer.";
    a.indexer = IndexerWeights{.wq_b = r.linear(ip + "wq_b.weight"),
                               .wk = r.linear(ip + "wk.weight"),
                               .weights_proj = r.linear(ip + "weights_proj.weight"),
                               .k_norm_weight = r.floats(ip + "k_norm.weight"),
                               .k_norm_bias = r.floats(ip + "k_norm.bias")};
  }
  return a;
}

FfnWeights load_ffn(const Reader& r, const ModelConfig& c, int64_t layer, const std::string& p) {
  FfnWeights f;
  f.is_moe = c.is_moe_layer(layer);
  if (!f.is_moe) {
    f.dense = r.mlp(p);
    return f;
  }
  f.gate_weight = static_cast<const bf16*>(r.linear(p + "gate.weight").data);
  if (r.contains(p + "gate.e_score_correction_bias")) {
    f.gate_bias = r.floats(p + "gate.e_score_correction_bias");
  }
  f.experts.reserve(size_t(c.n_routed_experts));
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    f.experts.push_back(r.mlp(p + "experts." + std::to_string(e) + "."));
  }
  if (c.n_shared_experts > 0) f.shared = r.mlp(p + "shared_experts.");
  return f;
}

LayerWeights load_layer(const Reader& r, const ModelConfig& c, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  LayerWeights w;
  w.attn_norm = r.floats(p + "input_layernorm.weight");
  w.attn = load_attention(r, c, p + "self_attn.");
  w.ffn_norm = r.floats(p + "post_attention_layernorm.weight");
  w.ffn = load_ffn(r, c, layer, p + "mlp.");
  return w;
}

}  // namespace

void ModelWeights::set_index_topk(int64_t k) {
  if (!config_.has_indexer()) fail("index_topk: this model has no lightning indexer");
  if (k < 1) fail("index_topk must be at least 1, got {}", k);
  config_.index_topk = k;
}

std::unique_ptr<ModelWeights> ModelWeights::load(const std::filesystem::path& dir,
                                                 ThreadPool& pool) {
  auto weights = std::unique_ptr<ModelWeights>(new ModelWeights());
  weights->config_ = load_model_config(dir);
  weights->checkpoint_ = std::make_unique<Checkpoint>(dir);
  const ModelConfig& c = weights->config_;
  check_layout(c, *weights->checkpoint_, dir);

  const Reader r(*weights->checkpoint_, pool);
  weights->embedding = weights->checkpoint_->view("model.embed_tokens.weight").data<bf16>();
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    weights->layers.push_back(load_layer(r, c, layer));
  }
  for (int64_t layer = c.num_hidden_layers; layer < c.total_layers(); ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    weights->mtp.push_back({.enorm = r.floats(p + "enorm.weight"),
                            .hnorm = r.floats(p + "hnorm.weight"),
                            .eh_proj = r.linear(p + "eh_proj.weight"),
                            .layer = load_layer(r, c, layer),
                            .head_norm = r.floats(p + "shared_head.norm.weight")});
  }
  weights->final_norm = r.floats("model.norm.weight");
  weights->lm_head = r.linear("lm_head.weight");
  return weights;
}

}  // namespace dsa
