// Random-weight checkpoints for model tests, written with the library (as `dsa init-model` does).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "model/config.h"

namespace dsa::test {

// Writes config.json and the checkpoint of `config` with init-model's generator and `seed` into
// `dir`; shards of at most `max_shard_bytes` (0: one file).
void write_random_model(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                        uint64_t max_shard_bytes = 0);

// A preset's config, bf16 instead of FP8 when `fp8` is false.
ModelConfig preset_config(const std::string& preset, bool fp8 = true);

}  // namespace dsa::test
