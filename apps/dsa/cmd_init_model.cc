// `dsa init-model`: writes a random-weight checkpoint with exactly the tensor names, shapes and
// dtypes of a DeepSeek-V3.2 (or V3) Hugging Face checkpoint, plus its config.json.
//
// --dry-run prints the plan (tensors, parameters, bytes, files) and writes only config.json, so
// that `dsa inspect DIR` can show the layout of a model too large to generate here.
#include <fmt/format.h>

#include <filesystem>
#include <optional>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/config.h"
#include "model/init_weights.h"
#include "model/presets.h"
#include "model/tensor_layout.h"
#include "output_folder.h"

namespace dsa::cli {
namespace fs = std::filesystem;
namespace {

struct InitModelOptions {
  std::string preset;
  std::string config_path;
  std::string dtype;  // "fp8", "bf16" or empty (keep the config's)
  uint64_t seed = 0;
  std::string output;
  bool force = false;
  bool dry_run = false;
  bool list_presets = false;
  uint64_t max_shard_mib = 4096;
  int threads = 0;
};

void print_presets() {
  fmt::print("{:<11} {:<24} {:>16} {:>16}  {}\n", "preset", "architecture", "parameters",
             "activated", "description");
  for (const ModelPreset& preset : model_presets()) {
    const ParameterCounts counts = count_parameters(preset.config);
    fmt::print("{:<11} {:<24} {:>16} {:>16}  {}\n", preset.name,
               architecture_name(preset.config.architecture), format_count(counts.total()),
               format_count(counts.activated_per_token), preset.description);
  }
  fmt::print("(parameters include the MTP layers; activated: per token, main model)\n");
}

ModelConfig resolve_config(const InitModelOptions& options) {
  if (options.preset.empty() == options.config_path.empty()) {
    fail("init-model: give exactly one of --preset NAME or --config FILE");
  }
  ModelConfig config = options.preset.empty() ? load_model_config(options.config_path)
                                              : find_model_preset(options.preset).config;
  if (options.dtype == "bf16") {
    config.quantization.reset();
  } else if (options.dtype == "fp8" && !config.fp8()) {
    config.quantization = QuantizationConfig{};
  }
  validate_model_config(config, options.preset.empty() ? options.config_path : options.preset);
  return config;
}

// The number of files SafetensorsWriter::write_checkpoint makes: it fills shards greedily in
// insertion order and gives an oversized tensor a shard of its own.
int64_t shard_count(const std::vector<CheckpointTensor>& tensors, uint64_t max_shard_bytes) {
  int64_t shards = 0;
  uint64_t bytes = 0;
  for (const CheckpointTensor& tensor : tensors) {
    if (shards == 0 || (bytes > 0 && bytes + tensor.nbytes() > max_shard_bytes)) {
      ++shards;
      bytes = 0;
    }
    bytes += tensor.nbytes();
  }
  return shards;
}

void run_init_model(const InitModelOptions& options) {
  if (options.list_presets) {
    print_presets();
    return;
  }
  if (options.output.empty()) fail("init-model: -o/--output DIR is required");
  if (options.max_shard_mib == 0) fail("init-model: --max-shard-mib must be positive");
  const ModelConfig config = resolve_config(options);
  const std::vector<ParameterSpec> parameters = model_parameters(config);
  const std::vector<CheckpointTensor> tensors = checkpoint_tensors(parameters);
  uint64_t total_bytes = 0;
  for (const CheckpointTensor& tensor : tensors) total_bytes += tensor.nbytes();
  const uint64_t max_shard_bytes = options.max_shard_mib << 20;
  const ParameterCounts counts = count_parameters(config);

  const fs::path dir(options.output);
  prepare_output(dir, options.force);
  if (!options.dry_run) {
    const uint64_t available = fs::space(dir).available;
    if (available < total_bytes) {
      fail(
          "{}: not enough disk space: the checkpoint needs {}, {} available (--dry-run writes "
          "only config.json)",
          dir.string(), format_bytes(total_bytes), format_bytes(available));
    }
  }
  write_file_atomically(dir / "config.json", model_config_to_json(config).dump(2) + "\n");
  const std::string plan =
      fmt::format("{} ({}, {}): {} tensors, {} parameters, {} in {} file(s)",
                  options.preset.empty() ? options.config_path : options.preset,
                  architecture_name(config.architecture), config.fp8() ? "fp8" : "bf16",
                  format_count(tensors.size()), format_count(counts.total()),
                  format_bytes(total_bytes), shard_count(tensors, max_shard_bytes));
  if (options.dry_run) {
    fmt::print("dry run: {}\nwrote only {} (`dsa inspect {}` shows the layout)\n", plan,
               (dir / "config.json").string(), dir.string());
    return;
  }

  ThreadPool pool(options.threads);
  ProgressBar progress("init-model", total_bytes);
  write_initial_checkpoint(dir, parameters, options.seed, max_shard_bytes, pool,
                           [&](uint64_t done) { progress.update(done); });
  progress.finish();
  fmt::print("wrote {} to {} (seed {})\n", plan, dir.string(), options.seed);
}

}  // namespace

void register_init_model(CLI::App& app) {
  auto options = std::make_shared<InitModelOptions>();
  auto* cmd = app.add_subcommand(
      "init-model", "Write a random-weight checkpoint with DeepSeek-V3.2's tensor layout");
  auto* preset = cmd->add_option("--preset", options->preset,
                                 "Model shape: tiny, tiny-v3, small, medium, v3.2-671b, v3-671b");
  auto* config = cmd->add_option("--config", options->config_path,
                                 "config.json (or a folder holding one) to take the shape from");
  preset->excludes(config);
  cmd->add_option("--dtype", options->dtype, "Weight format (default: fp8 for presets)")
      ->check(CLI::IsMember({"fp8", "bf16"}));
  cmd->add_option("-s,--seed", options->seed, "Random seed (same seed, same bytes)");
  cmd->add_option("-o,--output", options->output, "Output folder");
  cmd->add_flag("-f,--force", options->force, "Overwrite a non-empty output folder");
  cmd->add_flag("--dry-run", options->dry_run,
                "Print what would be written; write only config.json");
  cmd->add_flag("--list-presets", options->list_presets, "List the presets and exit");
  cmd->add_option("--max-shard-mib", options->max_shard_mib, "Largest file, in MiB (4096)");
  cmd->add_option("-t,--threads", options->threads, "Threads (default: all)");
  cmd->callback([options] { run_init_model(*options); });
}

}  // namespace dsa::cli
