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

// Temporary files of an atomic write that a killed run left behind (".<name>.tmp.<pid>.<n>").
// Only the trainer writes into its output folder, so every such file is stale.
void remove_stale_temporaries(const fs::path& folder) {
  std::error_code ignored;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, ignored)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string::npos) {
      fs::remove(entry.path(), ignored);
    }
  }
}

nlohmann::json read_state_json(const fs::path& dir) {
  const fs::path path = dir / "trainer" / "state.json";
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
}

}  // namespace

void save_checkpoint(const fs::path& dir, const ParameterBuffer& params, const AdamW& optimizer,
                     TrainerState state, const std::optional<fs::path>& tokenizer) {
  fs::create_directories(dir / "trainer");
  remove_stale_temporaries(dir);
  remove_stale_temporaries(dir / "trainer");
  const std::optional<TrainerState> previous =
      has_checkpoint(dir) ? std::optional(read_checkpoint_state(dir)) : std::nullopt;
  const std::string kept = previous ? fmt::format("{} still holds the checkpoint of step {}",
                                                  dir.string(), previous->step)
                                    : fmt::format("{} holds no checkpoint yet", dir.string());

  // 1. The optimizer file, under a new name (it has the step), and 2. the state that names it:
  // the commit point. Until it lands nothing the previous checkpoint uses has changed, and the
  // optimizer file, the largest, is where a full disk fails.
  state.optimizer_file = fmt::format("optimizer-{:08d}.safetensors", state.step);
  const fs::path optimizer_path = dir / "trainer" / state.optimizer_file;
  try {
    SafetensorsWriter writer;
    add_buffer(params, "param.", writer);
    add_buffer(optimizer.first_moment(), "exp_avg.", writer);
    add_buffer(optimizer.second_moment(), "exp_avg_sq.", writer);
    writer.set_metadata("step", std::to_string(state.step));
    writer.set_metadata("optimizer_steps", std::to_string(optimizer.steps_taken()));
    writer.write(optimizer_path);
    const nlohmann::json json = {{"step", state.step},
                                 {"data_position", state.data_position},
                                 {"log_bytes", state.log_bytes},
                                 {"tokens_seen", state.tokens_seen},
                                 {"elapsed_s", state.elapsed_s},
                                 {"optimizer_file", state.optimizer_file},
                                 {"optimizer_steps", optimizer.steps_taken()},
                                 {"settings", state.settings}};
    write_file_atomically(dir / "trainer" / "state.json", json.dump(2) + "\n");
  } catch (const Error& e) {
    // A new optimizer file that no state.json names would only take space on a disk that may be
    // full. (Saving the committed step again, as a resumed finished run does, replaces that
    // file atomically: a failure leaves it as it was.)
    std::error_code ignored;
    if (!previous || previous->optimizer_file != state.optimizer_file) {
      fs::remove(optimizer_path, ignored);
    }
    fail("{}; {}", e.what(), kept);
  }
  for (const fs::directory_entry& entry : fs::directory_iterator(dir / "trainer")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("optimizer-", 0) == 0 && name != state.optimizer_file) {
      std::error_code ignored;
      fs::remove(entry.path(), ignored);
    }
  }

  // 3. The model folder, for inference: bf16 weights, the config and the tokenizer. Each file is
  // replaced atomically, so a failure (or a kill) here leaves those of the previous checkpoint;
  // the next save, or a resume, writes them again.
  try {
    const ModelConfig& config = params.layout().config();
    write_file_atomically(dir / "config.json", model_config_to_json(config).dump(2) + "\n");
    SafetensorsWriter writer;
    add_parameter_tensors(params, DType::BF16, writer);
    writer.set_metadata("format", "pt");
    writer.set_metadata("step", std::to_string(state.step));
    writer.write_checkpoint(dir, kNoSharding);
    if (tokenizer && fs::absolute(*tokenizer) != fs::absolute(dir / "tokenizer.json")) {
      write_file_atomically(dir / "tokenizer.json", read_file(*tokenizer));
    }
  } catch (const Error& e) {
    fail(
        "{}; the training state of step {} is saved (--resume continues from it), but the model "
        "files in {} are not yet those of that step",
        e.what(), state.step, dir.string());
  }
}

bool has_checkpoint(const fs::path& dir) { return fs::exists(dir / "trainer" / "state.json"); }

TrainerState read_checkpoint_state(const fs::path& dir) {
  const fs::path state_path = dir / "trainer" / "state.json";
  const nlohmann::json json = read_state_json(dir);
  TrainerState state;
  try {
    state.step = json.at("step").get<int64_t>();
    state.data_position = json.at("data_position").get<uint64_t>();
    state.log_bytes = json.at("log_bytes").get<uint64_t>();
    state.tokens_seen = json.at("tokens_seen").get<int64_t>();
    state.elapsed_s = json.at("elapsed_s").get<double>();
    state.optimizer_file = json.at("optimizer_file").get<std::string>();
    state.optimizer_steps = json.at("optimizer_steps").get<int64_t>();
    state.settings = json.at("settings");
  } catch (const nlohmann::json::exception& e) {
    fail("{}: missing or mistyped field ({})", state_path.string(), e.what());
  }
  if (state.optimizer_file.find('/') != std::string::npos) {
    fail("{}: optimizer_file must be a file name in trainer/, got '{}'", state_path.string(),
         state.optimizer_file);
  }
  return state;
}

ResumedCheckpoint load_checkpoint(const fs::path& dir,
                                  std::shared_ptr<const ParameterLayout> layout, AdamW& optimizer) {
  const TrainerState state = read_checkpoint_state(dir);
  optimizer.set_steps_taken(state.optimizer_steps);
  const SafetensorsFile file(dir / "trainer" / state.optimizer_file);
  ResumedCheckpoint resumed{.state = state, .params = ParameterBuffer(layout)};
  read_buffer(file, "param.", resumed.params);
  read_buffer(file, "exp_avg.", optimizer.first_moment());
  read_buffer(file, "exp_avg_sq.", optimizer.second_moment());
  return resumed;
}

}  // namespace dsa::train
