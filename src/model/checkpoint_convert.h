// `dsa convert`: a checkpoint between bf16 weights and DeepSeek's FP8 block-scaled layout
// (e4m3 codes plus an F32 `weight_scale_inv` per 128×128 block, dsa-reference.md §2.3), in either
// direction. Only the projections that the FP8 layout stores as FP8 change (tensor_layout.h
// decides which); norms, embeddings, the router and the LM head are copied byte for byte.
//
// To FP8: per block S = amax / 448 and W = fp8(w / S) (core/fp8_quant.h), as DeepSeek's
// checkpoints are made. To bf16: w = bf16(fp8(W) · S), the value inference and training load
// from the FP8 checkpoint, so the converted model computes exactly what the FP8 one did.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "core/thread_pool.h"
#include "model/config.h"

namespace dsa {

enum class WeightFormat { kBf16, kFp8 };

struct ConvertSummary {
  ModelConfig target;
  int64_t tensors = 0;    // written, scales included
  int64_t converted = 0;  // parameters whose format changed
  uint64_t bytes = 0;     // of the tensors written
};

// The config of the converted model: `source` with quantization_config added (FP8, DeepSeek's
// values) or removed (bf16). FP8 needs every FP8 projection's input width to be a multiple of
// 128; a config that is not is a dsa::Error naming the width.
ModelConfig converted_config(const ModelConfig& source, WeightFormat to);

// Reads the checkpoint folder `input` (config.json + safetensors) and writes the converted one
// into `output` (which must exist and must not be `input`): config.json (the input's JSON with
// only quantization_config changed), the weights (shards of at most `max_shard_bytes`), and
// every other regular file of the input folder (tokenizer.json, generation_config.json, ...)
// copied. Converting to the format the input already has is a plain copy of the tensors. A
// tensor the config implies but the input lacks, or has with another shape or dtype, is a
// dsa::Error naming it (the router's optional e_score_correction_bias may be absent).
ConvertSummary convert_checkpoint(const std::filesystem::path& input,
                                  const std::filesystem::path& output, WeightFormat to,
                                  uint64_t max_shard_bytes, ThreadPool& pool,
                                  const std::function<void(uint64_t)>& on_progress = {});

}  // namespace dsa
