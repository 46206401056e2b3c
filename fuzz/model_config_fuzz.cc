// Feeds arbitrary bytes to the config.json parser. A dsa::Error with a printable message (no
// control bytes, valid UTF-8) is the expected answer to bad input; any other exception, a crash or
// a sanitizer report is a bug. An accepted config must
// write back to JSON that parses to the same JSON, and (when small enough to enumerate quickly)
// give a tensor layout whose parameter counts add up.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "core/json_strict.h"
#include "core/printable.h"
#include "model/config.h"
#include "model/tensor_layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const dsa::ModelConfig config =
        dsa::parse_model_config(dsa::parse_json_strict(text, "fuzz-input"), "fuzz-input");
    const nlohmann::json written = dsa::model_config_to_json(config);
    if (dsa::model_config_to_json(dsa::parse_model_config(written)) != written) std::abort();
    if (dsa::kv_cache_bytes_per_token(config).per_layer() <= 0) std::abort();
    if (config.total_layers() * (config.n_routed_experts + 1) <= 4096) {
      const dsa::ParameterCounts counts = dsa::count_parameters(config);
      int64_t sum = 0;
      for (int64_t n : counts.by_module) sum += n;
      if (sum != counts.main_model || counts.activated_per_token > counts.main_model) std::abort();
    }
  } catch (const dsa::Error& e) {
    if (dsa::printable(e.what()) != e.what()) std::abort();
  }
  return 0;
}
