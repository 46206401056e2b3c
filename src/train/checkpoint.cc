#include "train/checkpoint.h"

#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/safetensors_writer.h"

namespace dsa::train {
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kNoSharding = ~uint64_t(0);

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Adds one fp32 buffer's tensors under "<prefix><name>".
void add_buffer(const ParameterBuffer& buffer, const std::string& prefix,
                SafetensorsWriter& writer) {
  for (const TrainTensor& t : buffer.layout().tensors()) {
    const std::span<const float> values = buffer.tensor(t);
    writer.add(prefix + t.spec.name, DType::F32, t.spec.shape, [values](std::span<uint8_t> out) {
      std::memcpy(out.data(), values.data(), values.size() * sizeof(float));
    });
  }
}

// Reads "<prefix><name>" of every tensor of `buffer`'s layout, checking shape and dtype.
void read_buffer(const SafetensorsFile& file, const std::string& prefix, ParameterBuffer& buffer) {
  for (const TrainTensor& t : buffer.layout().tensors()) {
    const std::string name = prefix + t.spec.name;
    const TensorInfo* info = file.find(name);
    if (!info) {
      fail("{}: the optimizer state has no tensor {}: it does not belong to this model",
           file.path().string(), name);
    }
    if (info->dtype != DType::F32 || !(info->shape == t.spec.shape)) {
      fail(
          "{}: {} is {} {}, but the model's {} is {} F32: the optimizer state does not match "
          "the model",
          file.path().string(), name, info->shape.to_string(), dtype_name(info->dtype), t.spec.name,
          t.spec.shape.to_string());
    }
    const std::span<const uint8_t> bytes = file.bytes(*info);
    std::memcpy(buffer.tensor(t).data(), bytes.data(), bytes.size());
  }
  const size_t expected = buffer.layout().tensors().size();
  size_t found = 0;
  for (const TensorInfo& info : file.tensors()) {
    if (info.name.rfind(prefix, 0) == 0) ++found;
  }
  if (found != expected) {
    fail("{}: the optimizer state has {} '{}' tensors, the model {}: it does not match the model",
         file.path().string(), found, prefix, expected);
  }
}

}  // namespace

void save_checkpoint(const fs::path& dir, const ParameterBuffer& params, const AdamW& optimizer,
                     TrainerState state, const std::optional<fs::path>& tokenizer) {
  fs::create_directories(dir / "trainer");
  const ModelConfig& config = params.layout().config();

  // The model folder, for inference: bf16 weights, the config and the tokenizer.
  write_file_atomically(dir / "config.json", model_config_to_json(config).dump(2) + "\n");
  {
    SafetensorsWriter writer;
    add_parameter_tensors(params, DType::BF16, writer);
    writer.set_metadata("format", "pt");
    writer.set_metadata("step", std::to_string(state.step));
    writer.write_checkpoint(dir, kNoSharding);
  }
  if (tokenizer && fs::absolute(*tokenizer) != fs::absolute(dir / "tokenizer.json")) {
    write_file_atomically(dir / "tokenizer.json", read_file(*tokenizer));
  }

  // The optimizer file, then the state that names it.
  state.optimizer_file = fmt::format("optimizer-{:08d}.safetensors", state.step);
  {
    SafetensorsWriter writer;
    add_buffer(params, "param.", writer);
    add_buffer(optimizer.first_moment(), "exp_avg.", writer);
    add_buffer(optimizer.second_moment(), "exp_avg_sq.", writer);
    writer.set_metadata("step", std::to_string(state.step));
    writer.set_metadata("optimizer_steps", std::to_string(optimizer.steps_taken()));
    writer.write(dir / "trainer" / state.optimizer_file);
  }
  const nlohmann::json json = {{"step", state.step},
                               {"data_position", state.data_position},
                               {"log_bytes", state.log_bytes},
                               {"tokens_seen", state.tokens_seen},
                               {"elapsed_s", state.elapsed_s},
                               {"optimizer_file", state.optimizer_file},
                               {"optimizer_steps", optimizer.steps_taken()},
                               {"settings", state.settings}};
  write_file_atomically(dir / "trainer" / "state.json", json.dump(2) + "\n");

  for (const fs::directory_entry& entry : fs::directory_iterator(dir / "trainer")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("optimizer-", 0) == 0 && name != state.optimizer_file) {
      std::error_code ignored;
      fs::remove(entry.path(), ignored);
    }
  }
}

bool has_checkpoint(const fs::path& dir) { return fs::exists(dir / "trainer" / "state.json"); }

ResumedCheckpoint load_checkpoint(const fs::path& dir,
                                  std::shared_ptr<const ParameterLayout> layout, AdamW& optimizer) {
  const fs::path state_path = dir / "trainer" / "state.json";
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(state_path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", state_path.string(), e.what());
  }
  TrainerState state;
  try {
    state.step = json.at("step").get<int64_t>();
    state.data_position = json.at("data_position").get<uint64_t>();
    state.log_bytes = json.at("log_bytes").get<uint64_t>();
    state.tokens_seen = json.at("tokens_seen").get<int64_t>();
    state.elapsed_s = json.at("elapsed_s").get<double>();
    state.optimizer_file = json.at("optimizer_file").get<std::string>();
    state.settings = json.at("settings");
    optimizer.set_steps_taken(json.at("optimizer_steps").get<int64_t>());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: missing or mistyped field ({})", state_path.string(), e.what());
  }
  if (state.optimizer_file.find('/') != std::string::npos) {
    fail("{}: optimizer_file must be a file name in trainer/, got '{}'", state_path.string(),
         state.optimizer_file);
  }
  const SafetensorsFile file(dir / "trainer" / state.optimizer_file);
  ResumedCheckpoint resumed{.state = state, .params = ParameterBuffer(layout)};
  read_buffer(file, "param.", resumed.params);
  read_buffer(file, "exp_avg.", optimizer.first_moment());
  read_buffer(file, "exp_avg_sq.", optimizer.second_moment());
  return resumed;
}

}  // namespace dsa::train
