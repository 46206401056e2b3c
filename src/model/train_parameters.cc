#include "model/train_parameters.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/float_formats.h"
#include "core/fp8_quant.h"
#include "core/safetensors.h"
#include "model/init_weights.h"

namespace dsa {

ParameterLayout::ParameterLayout(const ModelConfig& config) : config_(config) {
  // Training never runs the MTP layers, so the model it describes (and saves) has none.
  config_.num_nextn_predict_layers = 0;
  for_each_parameter(config_, [&](const ParameterSpec& spec) {
    if (spec.mtp) return;
    TrainTensor t;
    t.spec = spec;
    t.offset = size_;
    t.trainable = spec.name.find("e_score_correction_bias") == std::string::npos;
    t.weight_decay = t.trainable && spec.shape.rank() == 2;
    index_.emplace(spec.name, tensors_.size());
    tensors_.push_back(std::move(t));
    size_ += spec.numel();
  });
}

const TrainTensor* ParameterLayout::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TrainTensor& ParameterLayout::at(std::string_view name) const {
  const TrainTensor* t = find(name);
  DSA_CHECK(t != nullptr, "no parameter named {}", name);
  return *t;
}

ParameterBuffer::ParameterBuffer(std::shared_ptr<const ParameterLayout> layout)
    : layout_(std::move(layout)), values_(size_t(layout_->size()), 0.0f) {}

void ParameterBuffer::zero() { std::fill(values_.begin(), values_.end(), 0.0f); }

ParameterBuffer initial_parameters(const ModelConfig& config, uint64_t seed, ThreadPool& pool) {
  ParameterBuffer buffer(std::make_shared<const ParameterLayout>(config));
  for (const TrainTensor& t : buffer.layout().tensors()) {
    std::span<float> values = buffer.tensor(t);
    init_parameter_values(t.spec, seed, values, pool);
    if (t.spec.dtype != DType::F32) {
      for (float& v : values) v = round_to_bf16(v);
    }
  }
  return buffer;
}

namespace {

// One parameter's values from the checkpoint, as inference reads them.
void read_parameter(const Checkpoint& checkpoint, const TrainTensor& t, std::span<float> out) {
  const TensorView view = checkpoint.view(t.spec.name);
  const size_t n = out.size();
  switch (view.dtype()) {
    case DType::F32:
      std::memcpy(out.data(), view.raw_data(), n * sizeof(float));
      break;
    case DType::BF16: {
      const bf16* src = view.data<bf16>();
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(src[i]);
      break;
    }
    case DType::F8_E4M3: {
      const TensorView scale = checkpoint.view(t.spec.scale_name());
      const int64_t rows = t.spec.shape[0], cols = t.spec.shape[1];
      dequantize_weight_fp8(view.data<fp8_e4m3>(), scale.data<float>(), rows, cols, out.data());
      for (float& v : out) v = round_to_bf16(v);
      break;
    }
    default:
      fail("{}: tensor {} has dtype {}, which training cannot load",
           checkpoint.directory().string(), t.spec.name, dtype_name(view.dtype()));
  }
}

}  // namespace

ParameterBuffer with_index_topk(const ParameterBuffer& params, int64_t k) {
  ModelConfig config = params.layout().config();
  if (!config.has_indexer()) fail("index_topk: this model has no lightning indexer");
  if (k < 1) fail("index_topk must be at least 1, got {}", k);
  config.index_topk = k;
  ParameterBuffer copy(std::make_shared<const ParameterLayout>(config));
  DSA_CHECK(copy.values().size() == params.values().size(), "index_topk changed the layout");
  std::copy(params.values().begin(), params.values().end(), copy.values().begin());
  return copy;
}

ParameterBuffer load_parameters(const std::filesystem::path& dir, ThreadPool& pool) {
  (void)pool;
  const ModelConfig config = load_model_config(dir);
  const Checkpoint checkpoint(dir);
  const std::vector<LayoutMismatch> mismatches =
      compare_with_checkpoint(checkpoint_tensors(model_parameters(config)), checkpoint);
  if (!mismatches.empty()) {
    std::string list;
    for (size_t i = 0; i < mismatches.size() && i < 20; ++i) {
      list += "\n  " + mismatches[i].describe();
    }
    if (mismatches.size() > 20) list += fmt::format("\n  ... and {} more", mismatches.size() - 20);
    fail("{}: the checkpoint does not match its config.json ({} differences):{}", dir.string(),
         mismatches.size(), list);
  }
  ParameterBuffer buffer(std::make_shared<const ParameterLayout>(config));
  for (const TrainTensor& t : buffer.layout().tensors())
    read_parameter(checkpoint, t, buffer.tensor(t));
  return buffer;
}

void add_parameter_tensors(const ParameterBuffer& buffer, DType dtype, SafetensorsWriter& writer,
                           const std::string& prefix,
                           const std::function<bool(const TrainTensor&)>& include) {
  DSA_CHECK(dtype == DType::F32 || dtype == DType::BF16, "parameters are written as F32 or BF16");
  for (const TrainTensor& t : buffer.layout().tensors()) {
    if (include && !include(t)) continue;
    // The router bias stays F32, as in DeepSeek's checkpoints.
    const DType out = t.spec.dtype == DType::F32 ? DType::F32 : dtype;
    const std::span<const float> values = buffer.tensor(t);
    writer.add(prefix + t.spec.name, out, t.spec.shape, [values, out](std::span<uint8_t> bytes) {
      if (out == DType::F32) {
        std::memcpy(bytes.data(), values.data(), values.size() * sizeof(float));
        return;
      }
      bf16* dst = reinterpret_cast<bf16*>(bytes.data());
      for (size_t i = 0; i < values.size(); ++i) dst[i] = float_to_bf16(values[i]);
    });
  }
}

}  // namespace dsa
