#include "model/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/file_read.h"
#include "core/json_describe.h"
#include "core/json_strict.h"
#include "core/printable.h"
#include "model/layout_limits.h"

namespace dsa {
namespace {

using nlohmann::json;

// Upper bounds that keep every derived size (tensor elements, bytes, parameter totals) far from
// int64 overflow while allowing any real model: 2^18 for widths, 2^22 for the vocabulary.
constexpr int64_t kMaxWidth = int64_t(1) << 18;
constexpr int64_t kMaxVocab = int64_t(1) << 22;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxExperts = 4096;

std::string json_type(const json& value) {
  if (value.is_number_float()) return "a number with a fraction";
  if (value.is_number_integer()) return "an integer";
  return std::string(value.type_name());
}

// Reads the keys of one config object, remembering which ones were used so that the rest can be
// kept as extras. Every error names the source, the key and what was expected.
class KeyReader {
 public:
  KeyReader(const json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const {
    return object_.contains(key) && !object_.at(key).is_null();
  }

  const json* find(const std::string& key) {
    used_.insert(key);
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  const json& require(const std::string& key) {
    const json* value = find(key);
    if (!value) fail("{}: missing required key '{}'", source_, name(key));
    return *value;
  }

  int64_t integer(const std::string& key, std::optional<int64_t> fallback, int64_t min,
                  int64_t max) {
    const json* value = fallback ? find(key) : &require(key);
    if (!value) return *fallback;
    if (!value->is_number_integer()) {
      fail("{}: '{}' must be an integer, got {}", source_, name(key), json_type(*value));
    }
    // nlohmann stores every non-negative integer as unsigned: both bounds apply to it too (a 0
    // must not pass a minimum of 1, or "n_group": 0 divides by zero later).
    const bool in_range = value->is_number_unsigned()
                              ? value->get<uint64_t>() <= uint64_t(max) &&
                                    (min <= 0 || value->get<uint64_t>() >= uint64_t(min))
                              : value->get<int64_t>() >= min && value->get<int64_t>() <= max;
    if (!in_range) {
      fail("{}: '{}' must be between {} and {}, got {}", source_, name(key), min, max,
           describe_json(*value));
    }
    return value->get<int64_t>();
  }

  double number(const std::string& key, std::optional<double> fallback, double min) {
    const json* value = fallback ? find(key) : &require(key);
    if (!value) return *fallback;
    if (!value->is_number()) {
      fail("{}: '{}' must be a number, got {}", source_, name(key), json_type(*value));
    }
    const double result = value->get<double>();
    if (!(result >= min)) {
      fail("{}: '{}' must be at least {}, got {}", source_, name(key), min, result);
    }
    return result;
  }

  bool boolean(const std::string& key, bool fallback) {
    const json* value = find(key);
    if (!value) return fallback;
    if (!value->is_boolean()) {
      fail("{}: '{}' must be true or false, got {}", source_, name(key), json_type(*value));
    }
    return value->get<bool>();
  }

  // A string that must be one of `allowed` (the first one is the default).
  std::string choice(const std::string& key, std::initializer_list<std::string_view> allowed,
                     bool required = false) {
    const json* value = required ? &require(key) : find(key);
    if (!value) return std::string(*allowed.begin());
    if (!value->is_string()) {
      fail("{}: '{}' must be a string, got {}", source_, name(key), json_type(*value));
    }
    const std::string text = value->get<std::string>();
    for (std::string_view option : allowed) {
      if (text == option) return text;
    }
    fail("{}: '{}' must be {}, got \"{}\"", source_, name(key), describe(allowed),
         printable_excerpt(text));
  }

  json unused_keys() const {
    json rest = json::object();
    for (const auto& [key, value] : object_.items()) {
      if (!used_.count(key)) rest[key] = value;
    }
    return rest;
  }

  std::string name(const std::string& key) const { return prefix_ + key; }
  const std::string& source() const { return source_; }

 private:
  static std::string describe(std::initializer_list<std::string_view> allowed) {
    std::string text;
    for (std::string_view option : allowed) {
      if (!text.empty()) text += " or ";
      text += fmt::format("\"{}\"", option);
    }
    return text;
  }

  const json& object_;
  std::string source_;
  std::string prefix_;
  std::set<std::string> used_;
};

Architecture parse_architecture(KeyReader& keys) {
  const json& archs = keys.require("architectures");
  if (!archs.is_array() || archs.size() != 1 || !archs[0].is_string()) {
    fail("{}: 'architectures' must be a list of one name, got {}", keys.source(),
         describe_json(archs));
  }
  const std::string name = archs[0].get<std::string>();
  Architecture arch;
  if (name == architecture_name(Architecture::kDeepseekV32)) {
    arch = Architecture::kDeepseekV32;
  } else if (name == architecture_name(Architecture::kDeepseekV3)) {
    arch = Architecture::kDeepseekV3;
  } else {
    fail(
        "{}: 'architectures' must be [\"DeepseekV32ForCausalLM\"] or [\"DeepseekV3ForCausalLM\"], "
        "got \"{}\"",
        keys.source(), printable_excerpt(name));
  }
  if (const json* type = keys.find("model_type")) {
    if (!type->is_string() || type->get<std::string>() != model_type_name(arch)) {
      fail("{}: 'model_type' must be \"{}\" for {}, got {}", keys.source(), model_type_name(arch),
           name, describe_json(*type));
    }
  }
  return arch;
}

std::optional<RopeScaling> parse_rope_scaling(KeyReader& keys) {
  const json* value = keys.find("rope_scaling");
  if (!value) return std::nullopt;
  if (!value->is_object()) {
    fail("{}: 'rope_scaling' must be an object or null, got {}", keys.source(), json_type(*value));
  }
  KeyReader rope(*value, keys.source(), "rope_scaling.");
  // Older configs name the kind "type", newer transformers "rope_type"; either (or both) is fine.
  if (!rope.has("type") && !rope.has("rope_type")) rope.require("type");
  for (const char* key : {"type", "rope_type"}) {
    if (rope.has(key)) rope.choice(key, {"yarn"});
  }
  RopeScaling scaling;
  scaling.factor = rope.number("factor", std::nullopt, 1.0);
  scaling.original_max_position_embeddings =
      rope.integer("original_max_position_embeddings", std::nullopt, 1, int64_t(1) << 30);
  scaling.beta_fast = rope.number("beta_fast", scaling.beta_fast, 0.0);
  scaling.beta_slow = rope.number("beta_slow", scaling.beta_slow, 0.0);
  scaling.mscale = rope.number("mscale", scaling.mscale, 0.0);
  scaling.mscale_all_dim = rope.number("mscale_all_dim", scaling.mscale_all_dim, 0.0);
  if (!(scaling.beta_fast > scaling.beta_slow)) {
    fail("{}: 'rope_scaling.beta_fast' must be greater than 'rope_scaling.beta_slow' ({} vs {})",
         keys.source(), scaling.beta_fast, scaling.beta_slow);
  }
  return scaling;
}

std::optional<QuantizationConfig> parse_quantization(KeyReader& keys) {
  const json* value = keys.find("quantization_config");
  if (!value) return std::nullopt;
  if (!value->is_object()) {
    fail("{}: 'quantization_config' must be an object, got {}", keys.source(), json_type(*value));
  }
  KeyReader quant(*value, keys.source(), "quantization_config.");
  quant.choice("quant_method", {"fp8"}, /*required=*/true);
  quant.choice("fmt", {"e4m3"});
  quant.choice("activation_scheme", {"dynamic"});
  if (const json* block = quant.find("weight_block_size")) {
    if (*block != json::array({128, 128})) {
      fail("{}: 'quantization_config.weight_block_size' must be [128, 128], got {}", keys.source(),
           describe_json(*block));
    }
  }
  QuantizationConfig config;
  config.scale_fmt = quant.has("scale_fmt") ? quant.choice("scale_fmt", {"ue8m0"}) : "";
  return config;
}

void require_multiple(const std::string& source, std::string_view what, int64_t value,
                      int64_t multiple, std::string_view why) {
  if (value % multiple != 0) {
    fail("{}: '{}' must be a multiple of {} {} (got {})", source, what, multiple, why, value);
  }
}

}  // namespace

std::string_view architecture_name(Architecture arch) {
  return arch == Architecture::kDeepseekV32 ? "DeepseekV32ForCausalLM" : "DeepseekV3ForCausalLM";
}

std::string_view model_type_name(Architecture arch) {
  return arch == Architecture::kDeepseekV32 ? "deepseek_v32" : "deepseek_v3";
}

ModelConfig parse_model_config(const json& object, std::string_view source_view) {
  const std::string source(source_view);
  if (!object.is_object()) fail("{}: expected a JSON object, got {}", source, json_type(object));
  KeyReader keys(object, source);
  ModelConfig c;
  c.architecture = parse_architecture(keys);
  c.vocab_size = keys.integer("vocab_size", std::nullopt, 1, kMaxVocab);
  c.hidden_size = keys.integer("hidden_size", std::nullopt, 1, kMaxWidth);
  c.intermediate_size = keys.integer("intermediate_size", std::nullopt, 1, kMaxWidth);
  c.moe_intermediate_size = keys.integer("moe_intermediate_size", std::nullopt, 1, kMaxWidth);
  c.num_hidden_layers = keys.integer("num_hidden_layers", std::nullopt, 1, kMaxLayers);
  c.num_nextn_predict_layers = keys.integer("num_nextn_predict_layers", 0, 0, kMaxLayers);
  c.num_attention_heads = keys.integer("num_attention_heads", std::nullopt, 1, kMaxWidth);
  c.num_key_value_heads = keys.integer("num_key_value_heads", c.num_attention_heads, 1, kMaxWidth);
  c.n_shared_experts = keys.integer("n_shared_experts", std::nullopt, 0, kMaxExperts);
  c.n_routed_experts = keys.integer("n_routed_experts", std::nullopt, 1, kMaxExperts);
  c.routed_scaling_factor = keys.number("routed_scaling_factor", 1.0, 0.0);
  c.kv_lora_rank = keys.integer("kv_lora_rank", std::nullopt, 1, kMaxWidth);
  // Required, but null (no query compression) is a value.
  if (!object.contains("q_lora_rank")) keys.require("q_lora_rank");
  c.q_lora_rank = keys.integer("q_lora_rank", 0, 0, kMaxWidth);
  c.qk_rope_head_dim = keys.integer("qk_rope_head_dim", std::nullopt, 1, kMaxWidth);
  c.v_head_dim = keys.integer("v_head_dim", std::nullopt, 1, kMaxWidth);
  c.qk_nope_head_dim = keys.integer("qk_nope_head_dim", std::nullopt, 0, kMaxWidth);
  c.topk_method = keys.choice("topk_method", {"noaux_tc"});
  c.n_group = keys.integer("n_group", 1, 1, kMaxExperts);
  c.topk_group = keys.integer("topk_group", 1, 1, kMaxExperts);
  c.num_experts_per_tok = keys.integer("num_experts_per_tok", std::nullopt, 1, kMaxExperts);
  c.moe_layer_freq = keys.integer("moe_layer_freq", 1, 1, kMaxLayers);
  c.first_k_dense_replace = keys.integer("first_k_dense_replace", 0, 0, kMaxLayers);
  c.norm_topk_prob = keys.boolean("norm_topk_prob", true);
  c.scoring_func = keys.choice("scoring_func", {"sigmoid"});
  c.hidden_act = keys.choice("hidden_act", {"silu"});
  c.max_position_embeddings = keys.integer("max_position_embeddings", 4096, 1, int64_t(1) << 30);
  c.initializer_range = keys.number("initializer_range", 0.02, 0.0);
  c.rms_norm_eps = keys.number("rms_norm_eps", 1e-6, 0.0);
  c.use_cache = keys.boolean("use_cache", true);
  c.bos_token_id = keys.integer("bos_token_id", 0, 0, kMaxVocab);
  c.eos_token_id = keys.integer("eos_token_id", 1, 0, kMaxVocab);
  c.rope_theta = keys.number("rope_theta", 10000.0, 0.0);
  c.rope_scaling = parse_rope_scaling(keys);
  c.attention_bias = keys.boolean("attention_bias", false);
  c.attention_dropout = keys.number("attention_dropout", 0.0, 0.0);
  c.tie_word_embeddings = keys.boolean("tie_word_embeddings", false);
  c.torch_dtype = keys.choice("torch_dtype", {"bfloat16", "float16", "float32"});
  c.quantization = parse_quantization(keys);
  if (c.has_indexer()) {
    c.index_n_heads = keys.integer("index_n_heads", std::nullopt, 1, kMaxWidth);
    c.index_head_dim = keys.integer("index_head_dim", std::nullopt, 1, kMaxWidth);
    c.index_topk = keys.integer("index_topk", std::nullopt, 1, int64_t(1) << 30);
  }
  c.extra = keys.unused_keys();
  validate_model_config(c, source);
  return c;
}

void validate_model_config(const ModelConfig& c, std::string_view source_view) {
  const std::string source(source_view);
  if (c.num_key_value_heads != c.num_attention_heads) {
    fail("{}: 'num_key_value_heads' must equal 'num_attention_heads' for MLA ({} vs {})", source,
         c.num_key_value_heads, c.num_attention_heads);
  }
  if (c.n_routed_experts % c.n_group != 0) {
    fail("{}: 'n_routed_experts' must be divisible by 'n_group' ({} vs {})", source,
         c.n_routed_experts, c.n_group);
  }
  const int64_t per_group = c.n_routed_experts / c.n_group;
  if (per_group < 2) {
    fail(
        "{}: 'n_group' must leave at least 2 experts per group (the gate ranks groups by their "
        "top-2 experts): {} experts in {} groups",
        source, c.n_routed_experts, c.n_group);
  }
  if (c.topk_group > c.n_group) {
    fail("{}: 'topk_group' must be at most 'n_group' ({} vs {})", source, c.topk_group, c.n_group);
  }
  if (c.num_experts_per_tok > c.topk_group * per_group) {
    fail(
        "{}: 'num_experts_per_tok' must be at most the experts in 'topk_group' groups "
        "({} vs {} x {})",
        source, c.num_experts_per_tok, c.topk_group, per_group);
  }
  if (c.first_k_dense_replace > c.num_hidden_layers) {
    fail("{}: 'first_k_dense_replace' must be at most 'num_hidden_layers' ({} vs {})", source,
         c.first_k_dense_replace, c.num_hidden_layers);
  }
  if (c.attention_bias) fail("{}: 'attention_bias' must be false (MLA has no biases)", source);
  if (c.tie_word_embeddings) {
    fail("{}: 'tie_word_embeddings' must be false (DeepSeek checkpoints carry lm_head)", source);
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    fail("{}: 'qk_rope_head_dim' must be even (RoPE rotates pairs), got {}", source,
         c.qk_rope_head_dim);
  }
  require_multiple(source, "kv_lora_rank", c.kv_lora_rank, 128, "(FP8 latent cache groups)");
  if (c.moe_layer_freq != 1) {
    fail(
        "{}: 'moe_layer_freq' must be 1 (every layer from 'first_k_dense_replace' on is MoE), "
        "got {}",
        source, c.moe_layer_freq);
  }
  for (const auto& [key, id] :
       {std::pair{"bos_token_id", c.bos_token_id}, std::pair{"eos_token_id", c.eos_token_id}}) {
    if (id >= c.vocab_size) {
      fail("{}: '{}' must be below 'vocab_size' ({} vs {})", source, key, id, c.vocab_size);
    }
  }
  if (c.has_indexer()) {
    if (!c.has_q_lora()) {
      fail(
          "{}: 'q_lora_rank' must be positive for DeepseekV32ForCausalLM (the indexer reads the "
          "query latent)",
          source);
    }
    const int64_t d = c.index_head_dim;
    if (d != 128) {
      fail(
          "{}: 'index_head_dim' must be 128 (DeepSeek's reference quantizes each indexer query "
          "head with one FP8 scale per 128 dims, and its head weights broadcast over exactly one "
          "scale per head), got {}",
          source, d);
    }
    if (d < c.qk_rope_head_dim) {
      fail("{}: 'index_head_dim' must be at least 'qk_rope_head_dim' ({} vs {})", source, d,
           c.qk_rope_head_dim);
    }
  }
  if (c.fp8()) {
    const std::string_view why = "with FP8 weights (activations are quantized in groups of 128)";
    require_multiple(source, "hidden_size", c.hidden_size, 128, why);
    if (c.has_q_lora()) require_multiple(source, "q_lora_rank", c.q_lora_rank, 128, why);
    require_multiple(source, "intermediate_size", c.intermediate_size, 128, why);
    require_multiple(source, "moe_intermediate_size", c.moe_intermediate_size, 128, why);
    require_multiple(source, "num_attention_heads * v_head_dim",
                     c.num_attention_heads * c.v_head_dim, 128, why);
  }
  check_layout_limits(c, source);  // the sizes the keys add up to (layout_limits.h)
}

ModelConfig load_model_config(const std::filesystem::path& path) {
  const std::filesystem::path file =
      std::filesystem::is_directory(path) ? path / "config.json" : path;
  // Non-blocking open, regular files only, at most kMaxTextFileBytes (core/file_read.h).
  const std::string text = read_regular_file(file, "model config");
  return parse_model_config(parse_json_strict(text, file.string()), file.string());
}

json model_config_to_json(const ModelConfig& c) {
  json j = c.extra;
  j["architectures"] = json::array({architecture_name(c.architecture)});
  j["model_type"] = model_type_name(c.architecture);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["n_shared_experts"] = c.n_shared_experts;
  j["n_routed_experts"] = c.n_routed_experts;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["q_lora_rank"] = c.has_q_lora() ? json(c.q_lora_rank) : json(nullptr);
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["topk_method"] = c.topk_method;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["moe_layer_freq"] = c.moe_layer_freq;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["scoring_func"] = c.scoring_func;
  j["hidden_act"] = c.hidden_act;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["use_cache"] = c.use_cache;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling) {
    const RopeScaling& r = *c.rope_scaling;
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", r.factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings},
                         {"beta_fast", r.beta_fast},
                         {"beta_slow", r.beta_slow},
                         {"mscale", r.mscale},
                         {"mscale_all_dim", r.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["attention_bias"] = c.attention_bias;
  j["attention_dropout"] = c.attention_dropout;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  if (c.quantization) {
    json quant = {{"quant_method", "fp8"},
                  {"fmt", "e4m3"},
                  {"activation_scheme", "dynamic"},
                  {"weight_block_size", {128, 128}}};
    if (!c.quantization->scale_fmt.empty()) quant["scale_fmt"] = c.quantization->scale_fmt;
    j["quantization_config"] = quant;
  } else {
    j.erase("quantization_config");
  }
  if (c.has_indexer()) {
    j["index_n_heads"] = c.index_n_heads;
    j["index_head_dim"] = c.index_head_dim;
    j["index_topk"] = c.index_topk;
  }
  return j;
}

}  // namespace dsa
