#include "model/checkpoint_convert.h"

#include <fmt/format.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_read.h"
#include "core/fp8_quant.h"
#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "model/tensor_layout.h"

namespace dsa {
namespace fs = std::filesystem;
namespace {

// One parameter's values in fp32, read from the input in its own format.
std::vector<float> read_values(const Checkpoint& input, const CheckpointTensor& weight,
                               const CheckpointTensor* scale, ThreadPool& pool) {
  const std::span<const uint8_t> bytes = input.bytes(weight.name);
  const int64_t n = weight.shape.numel();
  std::vector<float> values(static_cast<size_t>(n));
  switch (weight.dtype) {
    case DType::F32:
      std::memcpy(values.data(), bytes.data(), size_t(n) * sizeof(float));
      break;
    case DType::BF16:
      pool.parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          bf16 x;
          std::memcpy(&x, bytes.data() + 2 * i, 2);
          values[size_t(i)] = bf16_to_float(x);
        }
      });
      break;
    case DType::F8_E4M3: {
      DSA_CHECK(scale != nullptr && weight.shape.rank() == 2, "{}: FP8 without its scale",
                weight.name);
      const std::span<const uint8_t> scales = input.bytes(scale->name);
      std::vector<float> scale_values(scales.size() / sizeof(float));
      std::memcpy(scale_values.data(), scales.data(), scales.size());
      dequantize_weight_fp8(reinterpret_cast<const fp8_e4m3*>(bytes.data()), scale_values.data(),
                            weight.shape[0], weight.shape[1], values.data());
      break;
    }
    default:
      fail("{}: cannot convert a tensor of dtype {}", weight.name, dtype_name(weight.dtype));
  }
  return values;
}

// The FP8 codes and scales of one parameter, made on first use by whichever of its two tensors
// the writer asks for first, and freed once both are written.
struct Quantized {
  std::mutex mutex;
  bool done = false;
  std::vector<fp8_e4m3> codes;
  std::vector<float> scales;
};

// Every tensor of the input the source layout implies must be there with its shape and dtype.
void check_input_tensors(const Checkpoint& input, const std::vector<CheckpointTensor>& expected,
                         const fs::path& dir) {
  std::vector<std::string> problems;
  for (const CheckpointTensor& t : expected) {
    if (!input.contains(t.name)) {
      if (!t.name.ends_with("e_score_correction_bias")) problems.push_back(t.name + " missing");
      continue;
    }
    const TensorInfo& info = input.info(t.name);
    if (info.dtype != t.dtype || !(info.shape == t.shape)) {
      problems.push_back(fmt::format("{} is {} {}, the config implies {} {}", t.name,
                                     dtype_name(info.dtype), info.shape.to_string(),
                                     dtype_name(t.dtype), t.shape.to_string()));
    }
  }
  if (problems.empty()) return;
  std::string list;
  for (size_t i = 0; i < problems.size() && i < 8; ++i) list += "\n  " + problems[i];
  if (problems.size() > 8) list += fmt::format("\n  ... and {} more", problems.size() - 8);
  fail("{}: the checkpoint does not match its config.json ({} problems):{}", dir.string(),
       problems.size(), list);
}

// The input's config.json with quantization_config set from `target` (or removed), every other
// key kept as it was.
std::string converted_config_text(const fs::path& input, const ModelConfig& target) {
  nlohmann::json json =
      nlohmann::json::parse(read_regular_file(input / "config.json", "config file"));
  if (target.fp8()) {
    json["quantization_config"] = model_config_to_json(target).at("quantization_config");
  } else {
    json.erase("quantization_config");
  }
  return json.dump(2) + "\n";
}

bool is_checkpoint_file(const std::string& name) {
  return name == "config.json" || name == "model.safetensors.index.json" ||
         name.ends_with(".safetensors");
}

}  // namespace

ModelConfig converted_config(const ModelConfig& source, WeightFormat to) {
  ModelConfig target = source;
  if (to == WeightFormat::kFp8) {
    if (!target.quantization) target.quantization = QuantizationConfig{};
  } else {
    target.quantization.reset();
  }
  validate_model_config(target, to == WeightFormat::kFp8 ? "the FP8 config" : "the bf16 config");
  return target;
}

ConvertSummary convert_checkpoint(const fs::path& input, const fs::path& output, WeightFormat to,
                                  uint64_t max_shard_bytes, ThreadPool& pool,
                                  const std::function<void(uint64_t)>& on_progress) {
  std::error_code error;
  if (fs::equivalent(input, output, error)) {
    fail("convert: the output folder {} is the input folder", output.string());
  }
  const ModelConfig source = load_model_config(input / "config.json");
  ConvertSummary summary;
  summary.target = converted_config(source, to);
  const Checkpoint checkpoint(input);
  const std::vector<ParameterSpec> source_specs = model_parameters(source);
  const std::vector<ParameterSpec> target_specs = model_parameters(summary.target);
  DSA_CHECK(source_specs.size() == target_specs.size(), "layouts of one model differ in size");
  const std::vector<CheckpointTensor> source_tensors = checkpoint_tensors(source_specs);
  check_input_tensors(checkpoint, source_tensors, input);

  // Per parameter: its weight and (FP8) scale tensors in the input layout.
  std::vector<const CheckpointTensor*> source_weight(source_specs.size(), nullptr);
  std::vector<const CheckpointTensor*> source_scale(source_specs.size(), nullptr);
  for (const CheckpointTensor& t : source_tensors) {
    (t.is_scale ? source_scale : source_weight)[t.parameter] = &t;
  }

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  std::vector<std::shared_ptr<Quantized>> quantized(target_specs.size());
  for (const CheckpointTensor& t : checkpoint_tensors(target_specs)) {
    const ParameterSpec& spec = target_specs[t.parameter];
    const CheckpointTensor& from = *source_weight[t.parameter];
    const CheckpointTensor* from_scale = source_scale[t.parameter];
    if (!checkpoint.contains(from.name)) continue;  // the optional router bias
    summary.tensors += 1;
    summary.bytes += t.nbytes();
    if (spec.dtype == from.dtype) {  // same format: the bytes as they are
      const std::string name = t.is_scale ? from_scale->name : from.name;
      writer.add(t.name, t.dtype, t.shape, [&checkpoint, name](std::span<uint8_t> out) {
        const std::span<const uint8_t> bytes = checkpoint.bytes(name);
        DSA_CHECK(bytes.size() == out.size(), "{}: {} bytes for {}", name, bytes.size(),
                  out.size());
        std::memcpy(out.data(), bytes.data(), out.size());
      });
      continue;
    }
    if (!t.is_scale) summary.converted += 1;
    if (spec.dtype == DType::BF16) {  // FP8 → bf16: the value inference loads
      writer.add(t.name, t.dtype, t.shape,
                 [&checkpoint, &pool, &from, from_scale](std::span<uint8_t> out) {
                   const std::vector<float> values =
                       read_values(checkpoint, from, from_scale, pool);
                   DSA_CHECK(out.size() == values.size() * 2, "{}: size", from.name);
                   for (size_t i = 0; i < values.size(); ++i) {
                     const bf16 x = float_to_bf16(values[i]);
                     std::memcpy(out.data() + 2 * i, &x, 2);
                   }
                 });
      continue;
    }
    DSA_CHECK(spec.fp8(), "{}: no conversion from {} to {}", t.name, dtype_name(from.dtype),
              dtype_name(spec.dtype));
    if (!quantized[t.parameter]) quantized[t.parameter] = std::make_shared<Quantized>();
    const std::shared_ptr<Quantized> q = quantized[t.parameter];
    const bool is_scale = t.is_scale;
    writer.add(
        t.name, t.dtype, t.shape,
        [&checkpoint, &pool, &from, from_scale, q, is_scale](std::span<uint8_t> out) {
          std::lock_guard lock(q->mutex);
          if (!q->done) {
            const std::vector<float> values = read_values(checkpoint, from, from_scale, pool);
            const int64_t rows = from.shape[0], cols = from.shape[1];
            q->codes.resize(values.size());
            q->scales.resize(size_t(weight_scale_rows(rows) * weight_scale_cols(cols)));
            quantize_weight_fp8(values.data(), rows, cols, q->codes.data(), q->scales.data(), pool);
            q->done = true;
          }
          if (is_scale) {
            DSA_CHECK(out.size() == q->scales.size() * sizeof(float), "scale size");
            std::memcpy(out.data(), q->scales.data(), out.size());
            std::vector<float>().swap(q->scales);
          } else {
            DSA_CHECK(out.size() == q->codes.size(), "code count");
            std::memcpy(out.data(), q->codes.data(), out.size());
            std::vector<fp8_e4m3>().swap(q->codes);
          }
        });
  }
  writer.write_checkpoint(output, max_shard_bytes, on_progress);
  write_file_atomically(output / "config.json", converted_config_text(input, summary.target));
  // The rest of a Hugging Face folder (tokenizer, generation config, license, ...) as it is.
  for (const fs::directory_entry& entry : fs::directory_iterator(input)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || is_checkpoint_file(name)) continue;
    write_file_atomically(output / name,
                          read_regular_file(entry.path(), "model folder file", uint64_t(1) << 30));
  }
  return summary;
}

}  // namespace dsa
