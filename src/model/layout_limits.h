// Limits on the size of the model a config describes, checked when a config is validated so that
// no count, byte size or allocation derived from it later can overflow int64 or run away.
//
// Each config key is bounded on its own (config.cc: widths up to 2^18, 1024 layers, 4096 experts),
// but products and sums of such keys are not: 2^18-wide layers, 2048 of them, hold more than 2^63
// parameters. What is checked here:
//   - at most kMaxLayoutParameters parameter tensors (the layout is enumerated by name, so its
//     time and memory grow with this count; DeepSeek-V3.2 has 46,493);
//   - every parameter total (by module, main model, MTP, all) and the checkpoint's byte total fit
//     int64;
//   - the KV cache at max_position_embeddings fits int64 bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "model/config.h"
#include "model/tensor_layout.h"

namespace dsa {

// About 2.8 times DeepSeek-V3.2's parameter tensors (61 + 1 layers of 256 experts).
constexpr int64_t kMaxLayoutParameters = int64_t(1) << 17;

// Throws dsa::Error naming `source` and the config keys involved when `config` exceeds a limit.
void check_layout_limits(const ModelConfig& config, std::string_view source);

// The config keys that size a module's tensors, quoted for messages: "'vocab_size', 'hidden_size'".
std::string module_size_keys(Module module);

// Adds `value` to `total`, or throws dsa::Error naming `source`, what overflowed (`what`: "the
// parameter count of routed_experts") and the keys of `module`.
void add_size_or_fail(int64_t& total, int64_t value, Module module, std::string_view what,
                      std::string_view source);

}  // namespace dsa
