#include "support/model_fixture.h"

#include <limits>

#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/init_weights.h"
#include "model/presets.h"
#include "model/tensor_layout.h"

namespace dsa::test {

void write_random_model(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                        uint64_t max_shard_bytes) {
  std::filesystem::create_directories(dir);
  write_file_atomically(dir / "config.json", model_config_to_json(config).dump(2) + "\n");
  ThreadPool pool(2);
  write_initial_checkpoint(
      dir, model_parameters(config), seed,
      max_shard_bytes == 0 ? std::numeric_limits<uint64_t>::max() : max_shard_bytes, pool);
}

ModelConfig preset_config(const std::string& preset, bool fp8) {
  ModelConfig config = find_model_preset(preset).config;
  if (!fp8) config.quantization.reset();
  return config;
}

}  // namespace dsa::test
