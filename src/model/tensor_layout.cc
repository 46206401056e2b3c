#include "model/tensor_layout.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/fp8_quant.h"
#include "model/layout_limits.h"

namespace dsa {
namespace {

// Builds the parameters of one config; `emit` receives each in checkpoint order.
class LayoutBuilder {
 public:
  LayoutBuilder(const ModelConfig& config, const std::function<void(const ParameterSpec&)>& emit)
      : c_(config),
        emit_(emit),
        matrix_dtype_(config.fp8() ? DType::F8_E4M3 : DType::BF16),
        // Residual-branch outputs are scaled down so that the sum over 2 * layers branches keeps
        // the residual stream near unit RMS.
        output_scale_(1.0 / std::sqrt(2.0 * double(config.num_hidden_layers))) {}

  void build() {
    const int64_t h = c_.hidden_size;
    embedding("model.embed_tokens.weight", false);
    for (int64_t layer = 0; layer < c_.total_layers(); ++layer) decoder_layer(layer);
    vector("model.norm.weight", h, Module::kNorm, -1, false, InitRule::kOnes);
    lm_head("lm_head.weight", -1, false);
  }

 private:
  void decoder_layer(int64_t layer) {
    const int64_t h = c_.hidden_size;
    const bool mtp = layer >= c_.num_hidden_layers;
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    if (mtp) {
      // DeepSeek-V3 MTP module (README_WEIGHTS): its own copy of the embedding, the two input
      // norms and the projection of [enorm(embedding); hnorm(hidden)].
      embedding(p + "embed_tokens.weight", true, layer);
      vector(p + "enorm.weight", h, Module::kNorm, layer, true, InitRule::kOnes);
      vector(p + "hnorm.weight", h, Module::kNorm, layer, true, InitRule::kOnes);
      emit(p + "eh_proj.weight", {h, 2 * h}, DType::BF16, Module::kMtpProjection, layer, mtp,
           InitRule::kNormal, 1.0 / std::sqrt(2.0 * double(h)));
    }
    vector(p + "input_layernorm.weight", h, Module::kNorm, layer, mtp, InitRule::kOnes);
    attention(p + "self_attn.", layer, mtp);
    vector(p + "post_attention_layernorm.weight", h, Module::kNorm, layer, mtp, InitRule::kOnes);
    if (c_.is_moe_layer(layer)) {
      moe(p + "mlp.", layer, mtp);
    } else {
      mlp(p + "mlp.", c_.intermediate_size, Module::kDenseMlp, layer, mtp);
    }
    if (mtp) {
      vector(p + "shared_head.norm.weight", h, Module::kNorm, layer, true, InitRule::kOnes);
      lm_head(p + "shared_head.head.weight", layer, true);
    }
  }

  void attention(const std::string& p, int64_t layer, bool mtp) {
    const int64_t h = c_.hidden_size;
    const int64_t heads = c_.num_attention_heads;
    const Module m = Module::kAttention;
    if (c_.has_q_lora()) {
      projection(p + "q_a_proj.weight", c_.q_lora_rank, h, m, layer, mtp);
      vector(p + "q_a_layernorm.weight", c_.q_lora_rank, m, layer, mtp, InitRule::kOnes);
      projection(p + "q_b_proj.weight", heads * c_.qk_head_dim(), c_.q_lora_rank, m, layer, mtp);
    } else {
      projection(p + "q_proj.weight", heads * c_.qk_head_dim(), h, m, layer, mtp);
    }
    projection(p + "kv_a_proj_with_mqa.weight", c_.kv_lora_rank + c_.qk_rope_head_dim, h, m, layer,
               mtp);
    vector(p + "kv_a_layernorm.weight", c_.kv_lora_rank, m, layer, mtp, InitRule::kOnes);
    projection(p + "kv_b_proj.weight", heads * (c_.qk_nope_head_dim + c_.v_head_dim),
               c_.kv_lora_rank, m, layer, mtp);
    projection(p + "o_proj.weight", h, heads * c_.v_head_dim, m, layer, mtp, output_scale_);
    if (c_.has_indexer()) indexer(p + "indexer.", layer, mtp);
  }

  // dsa-reference.md §3.2: wq_b and wk FP8; k_norm (LayerNorm) and weights_proj BF16.
  void indexer(const std::string& p, int64_t layer, bool mtp) {
    const int64_t h = c_.hidden_size;
    const int64_t d = c_.index_head_dim;
    const Module m = Module::kIndexer;
    projection(p + "wq_b.weight", c_.index_n_heads * d, c_.q_lora_rank, m, layer, mtp);
    projection(p + "wk.weight", d, h, m, layer, mtp);
    vector(p + "k_norm.weight", d, m, layer, mtp, InitRule::kOnes);
    vector(p + "k_norm.bias", d, m, layer, mtp, InitRule::kZeros);
    emit(p + "weights_proj.weight", {c_.index_n_heads, h}, DType::BF16, m, layer, mtp,
         InitRule::kNormal, 1.0 / std::sqrt(double(h)));
  }

  void mlp(const std::string& p, int64_t inter, Module m, int64_t layer, bool mtp) {
    const int64_t h = c_.hidden_size;
    projection(p + "gate_proj.weight", inter, h, m, layer, mtp);
    projection(p + "up_proj.weight", inter, h, m, layer, mtp);
    projection(p + "down_proj.weight", h, inter, m, layer, mtp, output_scale_);
  }

  void moe(const std::string& p, int64_t layer, bool mtp) {
    const int64_t h = c_.hidden_size;
    // A small router keeps the initial sigmoid scores near 0.5, so routing starts balanced.
    emit(p + "gate.weight", {c_.n_routed_experts, h}, DType::BF16, Module::kGate, layer, mtp,
         InitRule::kNormal, 0.1 / std::sqrt(double(h)));
    emit(p + "gate.e_score_correction_bias", {c_.n_routed_experts}, DType::F32, Module::kGate,
         layer, mtp, InitRule::kZeros, 0.0);
    for (int64_t e = 0; e < c_.n_routed_experts; ++e) {
      mlp(p + "experts." + std::to_string(e) + ".", c_.moe_intermediate_size,
          Module::kRoutedExperts, layer, mtp);
    }
    if (c_.n_shared_experts > 0) {
      mlp(p + "shared_experts.", c_.shared_intermediate_size(), Module::kSharedExperts, layer, mtp);
    }
  }

  void embedding(const std::string& name, bool mtp, int64_t layer = -1) {
    // Unit-variance embeddings: the first RMSNorm sees well-scaled input.
    emit(name, {c_.vocab_size, c_.hidden_size}, DType::BF16, Module::kEmbedding, layer, mtp,
         InitRule::kNormal, 1.0, "model.embed_tokens.weight");
  }

  void lm_head(const std::string& name, int64_t layer, bool mtp) {
    emit(name, {c_.vocab_size, c_.hidden_size}, DType::BF16, Module::kLmHead, layer, mtp,
         InitRule::kNormal, 1.0 / std::sqrt(double(c_.hidden_size)), "lm_head.weight");
  }

  // A [out, in] matrix: FP8 in an FP8 checkpoint, std 1/sqrt(in) times `scale`.
  void projection(const std::string& name, int64_t out, int64_t in, Module m, int64_t layer,
                  bool mtp, double scale = 1.0) {
    emit(name, {out, in}, matrix_dtype_, m, layer, mtp, InitRule::kNormal,
         scale / std::sqrt(double(in)));
  }

  void vector(const std::string& name, int64_t size, Module m, int64_t layer, bool mtp,
              InitRule init) {
    emit(name, {size}, DType::BF16, m, layer, mtp, init, 0.0);
  }

  void emit(const std::string& name, Shape shape, DType dtype, Module m, int64_t layer, bool mtp,
            InitRule init, double std, const std::string& init_key = "") {
    ParameterSpec spec{
        name, shape, dtype, m, layer, mtp, init, std, init_key.empty() ? name : init_key};
    emit_(spec);
  }

  const ModelConfig& c_;
  const std::function<void(const ParameterSpec&)>& emit_;
  DType matrix_dtype_;
  double output_scale_;
};

}  // namespace

std::string_view module_name(Module module) {
  switch (module) {
    case Module::kEmbedding:
      return "embedding";
    case Module::kAttention:
      return "attention";
    case Module::kIndexer:
      return "indexer";
    case Module::kDenseMlp:
      return "dense_mlp";
    case Module::kRoutedExperts:
      return "routed_experts";
    case Module::kSharedExperts:
      return "shared_experts";
    case Module::kGate:
      return "gate";
    case Module::kNorm:
      return "norm";
    case Module::kMtpProjection:
      return "mtp_projection";
    case Module::kLmHead:
      return "lm_head";
  }
  DSA_CHECK(false, "unknown module {}", int(module));
  return "";
}

std::string ParameterSpec::scale_name() const {
  DSA_CHECK(fp8(), "{} is not an FP8 parameter", name);
  constexpr std::string_view kSuffix = ".weight";
  DSA_CHECK(name.ends_with(kSuffix), "FP8 parameter {} does not end in .weight", name);
  return name + "_scale_inv";
}

Shape ParameterSpec::scale_shape() const {
  DSA_CHECK(fp8() && shape.rank() == 2, "{} is not an FP8 matrix", name);
  return Shape{weight_scale_rows(shape[0]), weight_scale_cols(shape[1])};
}

void for_each_parameter(const ModelConfig& config,
                        const std::function<void(const ParameterSpec&)>& visit) {
  LayoutBuilder(config, visit).build();
}

std::vector<ParameterSpec> model_parameters(const ModelConfig& config) {
  std::vector<ParameterSpec> parameters;
  for_each_parameter(config, [&](const ParameterSpec& spec) { parameters.push_back(spec); });
  return parameters;
}

std::vector<CheckpointTensor> checkpoint_tensors(const std::vector<ParameterSpec>& parameters) {
  std::vector<CheckpointTensor> tensors;
  tensors.reserve(parameters.size() * 2);
  for (size_t i = 0; i < parameters.size(); ++i) {
    const ParameterSpec& p = parameters[i];
    tensors.push_back({p.name, p.dtype, p.shape, i, false});
    if (p.fp8()) tensors.push_back({p.scale_name(), DType::F32, p.scale_shape(), i, true});
  }
  return tensors;
}

ParameterCounts count_parameters(const ModelConfig& config) {
  ParameterCounts counts;
  // Routed experts are counted as the fraction a token activates: top-k of n per layer.
  // The sums are checked although validate_model_config (layout_limits.h) has checked them
  // already: a config built in code may not have been validated.
  constexpr std::string_view kSource = "model config";
  int64_t routed = 0;
  for_each_parameter(config, [&](const ParameterSpec& p) {
    if (p.mtp) {
      add_size_or_fail(counts.mtp, p.numel(), p.module, "the MTP parameter count", kSource);
      return;
    }
    add_size_or_fail(counts.by_module[int(p.module)], p.numel(), p.module,
                     "a module's parameter count", kSource);
    add_size_or_fail(counts.main_model, p.numel(), p.module, "the main model's parameter count",
                     kSource);
    if (p.module == Module::kRoutedExperts) routed += p.numel();  // at most main_model
  });
  int64_t total = counts.main_model;
  add_size_or_fail(total, counts.mtp, Module::kEmbedding, "the total parameter count", kSource);
  counts.activated_per_token =
      counts.main_model - routed + routed / config.n_routed_experts * config.num_experts_per_tok;
  return counts;
}

std::string LayoutMismatch::describe() const {
  static constexpr const char* kKinds[] = {"missing", "unexpected", "wrong shape", "wrong dtype"};
  return fmt::format("{}: {}{}{}", kKinds[int(kind)], name, detail.empty() ? "" : " (",
                     detail.empty() ? "" : detail + ")");
}

std::vector<LayoutMismatch> compare_with_checkpoint(const std::vector<CheckpointTensor>& expected,
                                                    const Checkpoint& checkpoint) {
  using Kind = LayoutMismatch::Kind;
  std::vector<LayoutMismatch> problems;
  std::set<std::string, std::less<>> known;
  for (const CheckpointTensor& tensor : expected) {
    known.insert(tensor.name);
    if (!checkpoint.contains(tensor.name)) {
      problems.push_back(
          {Kind::kMissing, tensor.name,
           fmt::format("{} {}", tensor.shape.to_string(), dtype_name(tensor.dtype))});
      continue;
    }
    const TensorInfo& found = checkpoint.info(tensor.name);
    const std::string detail =
        fmt::format("expected {} {}, found {} {}", tensor.shape.to_string(),
                    dtype_name(tensor.dtype), found.shape.to_string(), dtype_name(found.dtype));
    if (!(found.shape == tensor.shape)) {
      problems.push_back({Kind::kWrongShape, tensor.name, detail});
    } else if (found.dtype != tensor.dtype) {
      problems.push_back({Kind::kWrongDtype, tensor.name, detail});
    }
  }
  for (const std::string& name : checkpoint.tensor_names()) {
    if (!known.count(name)) problems.push_back({Kind::kUnexpected, name, ""});
  }
  std::stable_sort(problems.begin(), problems.end(), [](const auto& a, const auto& b) {
    return std::tie(a.kind, a.name) < std::tie(b.kind, b.name);
  });
  return problems;
}

KvCacheBytes kv_cache_bytes_per_token(const ModelConfig& config) {
  KvCacheBytes bytes;
  bytes.latent =
      config.kv_lora_rank + 4 * (config.kv_lora_rank / kFp8BlockSize) + 2 * config.qk_rope_head_dim;
  if (config.has_indexer()) {
    bytes.indexer = config.index_head_dim + 4 * (config.index_head_dim / kFp8BlockSize);
  }
  return bytes;
}

}  // namespace dsa
