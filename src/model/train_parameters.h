// The fp32 parameters of a model in training (docs/training-engine.md, "Parameters"): one flat
// buffer holding every main-model tensor of the checkpoint layout (tensor_layout.h) in checkpoint
// order, so that gradients, the optimizer's moments and clipping are plain loops over one array
// with the same layout. MTP layers are not part of it: training never runs them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/config.h"
#include "model/tensor_layout.h"

namespace dsa {

struct TrainTensor {
  ParameterSpec spec;
  int64_t offset = 0;         // first element in the flat buffer
  bool trainable = true;      // false: e_score_correction_bias (updated by rule, not gradient)
  bool weight_decay = false;  // AdamW decay: 2-D weights only
  int64_t numel() const { return spec.numel(); }
};

// Where each tensor of a config lives in the flat buffer; shared by parameters and gradients.
class ParameterLayout {
 public:
  explicit ParameterLayout(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const std::vector<TrainTensor>& tensors() const { return tensors_; }
  int64_t size() const { return size_; }  // elements of the flat buffer
  // The tensor called `name`, or null.
  const TrainTensor* find(std::string_view name) const;
  // The same, but a missing name is an internal error.
  const TrainTensor& at(std::string_view name) const;

 private:
  ModelConfig config_;
  std::vector<TrainTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  int64_t size_ = 0;
};

// A flat fp32 buffer over a layout: the parameters, their gradients or an optimizer moment.
class ParameterBuffer {
 public:
  explicit ParameterBuffer(std::shared_ptr<const ParameterLayout> layout);

  const ParameterLayout& layout() const { return *layout_; }
  std::shared_ptr<const ParameterLayout> shared_layout() const { return layout_; }
  std::span<float> values() { return values_; }
  std::span<const float> values() const { return values_; }
  float* data(std::string_view name) { return values_.data() + layout_->at(name).offset; }
  const float* data(std::string_view name) const {
    return values_.data() + layout_->at(name).offset;
  }
  std::span<float> tensor(const TrainTensor& t) {
    return {values_.data() + t.offset, size_t(t.numel())};
  }
  std::span<const float> tensor(const TrainTensor& t) const {
    return {values_.data() + t.offset, size_t(t.numel())};
  }
  void zero();

 private:
  std::shared_ptr<const ParameterLayout> layout_;
  std::vector<float> values_;
};

// Parameters of a fresh model: init-model's random values for `seed` (init_weights.h), rounded
// to bf16 as a bf16 checkpoint written by `dsa init-model --dtype bf16` would hold them.
ParameterBuffer initial_parameters(const ModelConfig& config, uint64_t seed, ThreadPool& pool);

// Parameters read from a Hugging Face checkpoint folder (config.json + safetensors): BF16 and F32
// tensors as they are, FP8 ones dequantized (code x weight_scale_inv block) and rounded to bf16,
// as inference loads them. The checkpoint must hold exactly the tensors its config implies
// (MTP layers included, though they are not loaded); any difference is a dsa::Error listing them.
ParameterBuffer load_parameters(const std::filesystem::path& dir, ThreadPool& pool);

// A copy of `params` whose config selects `k` keys per row (no tensor depends on index_topk).
// Throws dsa::Error for k < 1 or a model without an indexer.
ParameterBuffer with_index_topk(const ParameterBuffer& params, int64_t k);

// Adds every tensor of `buffer` to `writer` under its checkpoint name with `dtype` (BF16 rounds to
// nearest even; F32 is exact), each prefixed by `prefix` ("" for a checkpoint, "grad." etc.).
// Only tensors for which `include` is true are added (all when it is empty). The buffer must
// outlive the write.
void add_parameter_tensors(const ParameterBuffer& buffer, DType dtype, SafetensorsWriter& writer,
                           const std::string& prefix = "",
                           const std::function<bool(const TrainTensor&)>& include = {});

}  // namespace dsa
