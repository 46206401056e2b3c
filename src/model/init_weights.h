// Deterministic random weights for `dsa init-model` (and fresh training runs).
//
// Values come from a counter-based generator: element i of a parameter is a function of
// (seed, the parameter's init_key, i) only, so results do not depend on thread count, tensor order
// or which tensors are generated. The stream: k = splitmix64(seed ^ fnv1a64(init_key)); element i
// uses the 64 bits z = splitmix64_mix(k + (i + 1) * 0x9E3779B97F4A7C15), split into two 32-bit
// uniforms for one Box-Muller normal. Rules per parameter (std, ones, zeros) are in
// tensor_layout.h. FP8 parameters are generated in float and quantized per 128x128 block
// (core/fp8_quant.h), giving F8_E4M3 codes and an F32 weight_scale_inv.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string_view>

#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/config.h"
#include "model/tensor_layout.h"

namespace dsa {

// The per-parameter stream key.
uint64_t init_stream_key(uint64_t seed, std::string_view init_key);

// Standard normal sample number `index` of the stream `key`.
float init_standard_normal(uint64_t key, uint64_t index);

// The initial values of `spec` in float (before rounding to its checkpoint dtype), numel values.
void init_parameter_values(const ParameterSpec& spec, uint64_t seed, std::span<float> out,
                           ThreadPool& pool);

// Adds every checkpoint tensor of `parameters` to `writer` (names, dtypes, shapes from the layout)
// with fillers that generate the values while the file is written. `pool` must outlive the write.
void add_initial_weights(const std::vector<ParameterSpec>& parameters, uint64_t seed,
                         ThreadPool& pool, SafetensorsWriter& writer);

// The checkpoint files of `parameters` with random weights, written into `dir` as `dsa init-model`
// writes them (safetensors metadata format "pt"; shards of at most `max_shard_bytes`).
// config.json is the caller's. `on_progress` gets the bytes written so far.
void write_initial_checkpoint(const std::filesystem::path& dir,
                              const std::vector<ParameterSpec>& parameters, uint64_t seed,
                              uint64_t max_shard_bytes, ThreadPool& pool,
                              const std::function<void(uint64_t)>& on_progress = {});

}  // namespace dsa
