// Configs whose keys are each within bounds but whose model cannot be represented: parameter
// totals past int64 (2^18-wide layers, 2048 of them), or more parameter tensors than the layout
// enumerates. Each is a dsa::Error naming the config keys, raised quickly and without undefined
// behaviour (the sanitizer build runs these).
#include <gtest/gtest.h>

#include <chrono>

#include "core/error.h"
#include "model/config.h"
#include "model/layout_limits.h"
#include "model/presets.h"
#include "model/tensor_layout.h"

namespace dsa {
namespace {

using nlohmann::json;

constexpr int64_t kWidth = int64_t(1) << 18;  // config.cc's maximum width

// A V3.2 config with every width at its maximum and 1024 + 1024 layers, few enough experts that
// the tensor count stays within the limit: only the sums overflow.
json widest_config() {
  return json{{"architectures", {"DeepseekV32ForCausalLM"}},
              {"vocab_size", 129280},
              {"hidden_size", kWidth},
              {"intermediate_size", kWidth},
              {"moe_intermediate_size", kWidth},
              {"num_hidden_layers", 1024},
              {"num_nextn_predict_layers", 1024},
              {"num_attention_heads", kWidth},
              {"n_shared_experts", 1},
              {"n_routed_experts", 2},
              {"n_group", 1},
              {"topk_group", 1},
              {"num_experts_per_tok", 2},
              {"kv_lora_rank", kWidth},
              {"q_lora_rank", kWidth},
              {"qk_rope_head_dim", 64},
              {"v_head_dim", kWidth},
              {"qk_nope_head_dim", kWidth},
              {"index_n_heads", 64},
              {"index_head_dim", 128},
              {"index_topk", 2048}};
}

std::string error_of(const json& config) {
  try {
    parse_model_config(config, "huge/config.json");
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected the config to be rejected";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in: " << text;
}

TEST(LayoutLimits, ParameterTotalsPastInt64AreRejectedNamingTheKeys) {
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of(widest_config());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  expect_contains(message, "huge/config.json: ");
  expect_contains(message, "does not fit in 64 bits");
  expect_contains(message, "'num_hidden_layers', 'num_nextn_predict_layers'");
  expect_contains(message, "'hidden_size'");
  // Layers of 2^55-element attention matrices: attention is what overflows first.
  expect_contains(message, "attention");
  expect_contains(message, "'kv_lora_rank'");
}

TEST(LayoutLimits, TooManyParameterTensorsAreRejectedBeforeEnumeration) {
  json config = widest_config();
  config["hidden_size"] = 128;
  config["n_routed_experts"] = 4096;
  config["n_group"] = 8;
  config["topk_group"] = 8;
  config["num_experts_per_tok"] = 8;
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of(config);
  // Enumerating 2048 x 12,288 named tensors would take seconds and gigabytes.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.5);
  expect_contains(message, "too many parameter tensors");
  expect_contains(message, "'n_routed_experts'");
  expect_contains(message, "1024 + 1024 layers with 4096 experts");
  expect_contains(message, "at most 131072");
}

TEST(LayoutLimits, LargestRealModelsPass) {
  for (const char* preset : {"v3.2-671b", "v3-671b"}) {
    EXPECT_NO_THROW(check_layout_limits(find_model_preset(preset).config, preset)) << preset;
  }
  // Twice DeepSeek-V3.2's experts and layers is still within the tensor limit.
  ModelConfig bigger = find_model_preset("v3.2-671b").config;
  bigger.n_routed_experts = 512;
  bigger.num_hidden_layers = 80;
  EXPECT_NO_THROW(check_layout_limits(bigger, "bigger"));
  EXPECT_LE(int64_t(model_parameters(bigger).size()), kMaxLayoutParameters);
}

TEST(LayoutLimits, CountParametersThrowsInsteadOfOverflowingForUnvalidatedConfigs) {
  // Built in code, never validated: count_parameters must still not overflow.
  ModelConfig config = find_model_preset("tiny").config;
  config.hidden_size = kWidth;
  config.num_attention_heads = kWidth;
  config.v_head_dim = kWidth;
  config.qk_nope_head_dim = kWidth;
  config.kv_lora_rank = kWidth;
  config.q_lora_rank = kWidth;
  config.num_hidden_layers = 1024;
  config.num_nextn_predict_layers = 1024;
  try {
    count_parameters(config);
    FAIL() << "expected dsa::Error";
  } catch (const Error& error) {
    expect_contains(error.what(), "does not fit in 64 bits");
  }
}

TEST(LayoutLimits, KvCacheBytesPastInt64AreRejected) {
  ModelConfig config = find_model_preset("tiny").config;
  config.max_position_embeddings = int64_t(1) << 62;  // past config.cc's bound: built in code
  try {
    check_layout_limits(config, "kv");
    FAIL() << "expected dsa::Error";
  } catch (const Error& error) {
    expect_contains(error.what(), "KV cache");
    expect_contains(error.what(), "'max_position_embeddings'");
  }
}

TEST(LayoutLimits, ModuleKeysNameEveryModule) {
  for (int m = 0; m < kModuleCount; ++m) {
    EXPECT_NE(module_size_keys(Module(m)).find("'hidden_size'"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace dsa
