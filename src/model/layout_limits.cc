#include "model/layout_limits.h"

#include <fmt/format.h>

#include "core/checked_math.h"
#include "core/error.h"

namespace dsa {
namespace {

// Every layer has at most this many parameters besides its routed experts' three matrices each:
// 2 norms, 7 attention, 5 indexer, 2 gate, 3 shared-expert or dense-MLP, 6 MTP (22 in all).
constexpr int64_t kMaxParametersPerLayerBesidesExperts = 32;

constexpr std::string_view kLayerKeys = "'num_hidden_layers', 'num_nextn_predict_layers'";

// An upper bound on the parameter tensors of `config`, from its keys alone (checked before the
// layout is enumerated, so that an absurd config costs nothing).
std::optional<int64_t> parameter_count_bound(const ModelConfig& c) {
  const std::optional<int64_t> experts = checked_mul(3, c.n_routed_experts);
  if (!experts) return std::nullopt;
  const std::optional<int64_t> per_layer =
      checked_add(*experts, kMaxParametersPerLayerBesidesExperts);
  if (!per_layer) return std::nullopt;
  const std::optional<int64_t> layers = checked_mul(c.total_layers(), *per_layer);
  if (!layers) return std::nullopt;
  return checked_add(*layers, 3);  // embedding, final norm, lm_head
}

void check_kv_cache(const ModelConfig& c, std::string_view source) {
  const KvCacheBytes kv = kv_cache_bytes_per_token(c);
  const std::optional<int64_t> per_token = checked_mul(kv.per_layer(), c.num_hidden_layers);
  const std::optional<int64_t> at_context =
      per_token ? checked_mul(*per_token, c.max_position_embeddings) : std::nullopt;
  if (!at_context) {
    fail(
        "{}: the KV cache at 'max_position_embeddings' tokens does not fit in 64-bit byte counts "
        "(keys 'kv_lora_rank', 'qk_rope_head_dim', 'index_head_dim', 'num_hidden_layers', "
        "'max_position_embeddings')",
        source);
  }
}

}  // namespace

std::string module_size_keys(Module module) {
  switch (module) {
    case Module::kEmbedding:
    case Module::kLmHead:
      return "'vocab_size', 'hidden_size'";
    case Module::kAttention:
      return "'num_attention_heads', 'q_lora_rank', 'kv_lora_rank', 'qk_nope_head_dim', "
             "'qk_rope_head_dim', 'v_head_dim', 'hidden_size'";
    case Module::kIndexer:
      return "'index_n_heads', 'index_head_dim', 'q_lora_rank', 'hidden_size'";
    case Module::kDenseMlp:
      return "'first_k_dense_replace', 'intermediate_size', 'hidden_size'";
    case Module::kRoutedExperts:
      return "'n_routed_experts', 'moe_intermediate_size', 'hidden_size'";
    case Module::kSharedExperts:
      return "'n_shared_experts', 'moe_intermediate_size', 'hidden_size'";
    case Module::kGate:
      return "'n_routed_experts', 'hidden_size'";
    case Module::kNorm:
    case Module::kMtpProjection:
      return "'hidden_size'";
  }
  DSA_CHECK(false, "unknown module {}", int(module));
  return "";
}

void add_size_or_fail(int64_t& total, int64_t value, Module module, std::string_view what,
                      std::string_view source) {
  const std::optional<int64_t> sum = checked_add(total, value);
  if (!sum) {
    fail("{}: {} does not fit in 64 bits: the model is too large to describe (keys {}, {})", source,
         what, kLayerKeys, module_size_keys(module));
  }
  total = *sum;
}

void check_layout_limits(const ModelConfig& c, std::string_view source) {
  const std::optional<int64_t> bound = parameter_count_bound(c);
  if (!bound || *bound > kMaxLayoutParameters) {
    fail(
        "{}: the layout has too many parameter tensors (up to 3 x 'n_routed_experts' + {} per "
        "layer over 'num_hidden_layers' + 'num_nextn_predict_layers' = {} + {} layers with {} "
        "experts); at most {} are supported",
        source, kMaxParametersPerLayerBesidesExperts, c.num_hidden_layers,
        c.num_nextn_predict_layers, c.n_routed_experts, kMaxLayoutParameters);
  }
  // The exact totals, with every sum checked: the same sums as count_parameters and the
  // checkpoint's byte total, so that neither can overflow for a config that passed.
  ParameterCounts counts;
  int64_t checkpoint_bytes = 0;
  int64_t parameters = 0;
  for_each_parameter(c, [&](const ParameterSpec& p) {
    ++parameters;
    const std::string_view module = module_name(p.module);
    const int64_t numel = p.numel();
    if (p.mtp) {
      add_size_or_fail(counts.mtp, numel, p.module, "the MTP parameter count", source);
    } else {
      add_size_or_fail(counts.by_module[int(p.module)], numel, p.module,
                       fmt::format("the parameter count of {}", module), source);
      add_size_or_fail(counts.main_model, numel, p.module, "the main model's parameter count",
                       source);
    }
    int64_t total = counts.main_model;
    add_size_or_fail(total, counts.mtp, p.module, "the total parameter count", source);
    add_size_or_fail(checkpoint_bytes, int64_t(p.nbytes()), p.module, "the checkpoint's byte size",
                     source);
    if (p.fp8()) {
      add_size_or_fail(checkpoint_bytes, p.scale_shape().numel() * int64_t(dtype_size(DType::F32)),
                       p.module, "the checkpoint's byte size", source);
    }
  });
  DSA_CHECK(parameters <= *bound, "{} parameters exceed the bound {}", parameters, *bound);
  check_kv_cache(c, source);
}

}  // namespace dsa
