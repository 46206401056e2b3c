// Named model shapes for `dsa init-model --preset`: from a tiny test model to the real 671B.
//
//   tiny        a few million parameters: every kind of tensor, FP8 edge blocks, runs in tests
//   tiny-v3     tiny without the indexer (DeepseekV3ForCausalLM)
//   small       ~0.2B parameters, trains and runs on a 2-core CPU
//   medium      ~2B parameters, a single-GPU experiment model
//   v3.2-671b   DeepSeek-V3.2 (dsa-reference.md §1): 671B + 14B MTP
//   v3-671b     the same without the indexer (DeepSeek-V3.1 shape), the dense-attention baseline
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace dsa {

struct ModelPreset {
  std::string name;
  std::string description;
  ModelConfig config;  // FP8 (with quantization_config); drop it for a BF16 checkpoint
};

const std::vector<ModelPreset>& model_presets();

// Throws dsa::Error listing the known names if `name` is not one.
const ModelPreset& find_model_preset(std::string_view name);

}  // namespace dsa
