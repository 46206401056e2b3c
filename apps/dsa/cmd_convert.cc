// `dsa convert`: a checkpoint between bf16 and DeepSeek's FP8 block-scaled layout
// (model/checkpoint_convert.h), with a progress bar and a summary line.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "model/checkpoint_convert.h"
#include "model/config.h"
#include "model/tensor_layout.h"
#include "output_folder.h"

namespace dsa::cli {
namespace {

struct ConvertOptions {
  std::string model, output, to;
  bool force = false;
  uint64_t max_shard_mib = 4096;
  int threads = 0;
};

void run_convert(const ConvertOptions& o) {
  if (o.model.empty()) fail("convert: -m/--model DIR is required");
  if (o.output.empty()) fail("convert: -o/--output DIR is required");
  if (o.max_shard_mib == 0) fail("convert: --max-shard-mib must be positive");
  const WeightFormat to = o.to == "fp8" ? WeightFormat::kFp8 : WeightFormat::kBf16;
  const std::filesystem::path input(o.model), output(o.output);
  std::error_code error;
  if (std::filesystem::equivalent(input, output, error)) {
    fail("convert: the output folder {} is the input folder", output.string());
  }
  prepare_output(output, o.force);
  // The bar's total: the converted layout's bytes (checked again, with the tensors, below).
  const ModelConfig target = converted_config(load_model_config(input / "config.json"), to);
  uint64_t total = 0;
  for (const CheckpointTensor& t : checkpoint_tensors(model_parameters(target))) {
    total += t.nbytes();
  }
  ThreadPool pool(o.threads);
  ProgressBar progress("convert", total);
  const ConvertSummary summary = convert_checkpoint(input, output, to, o.max_shard_mib << 20, pool,
                                                    [&](uint64_t done) { progress.update(done); });
  progress.finish();
  fmt::print("wrote {} ({}): {} tensors, {} converted to {}, {}\n", output.string(),
             summary.target.fp8() ? "fp8" : "bf16", summary.tensors, summary.converted, o.to,
             format_bytes(summary.bytes));
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert a checkpoint between bf16 and FP8 (e4m3 + 128x128 weight_scale_inv) weights");
  cmd->add_option("-m,--model", o->model, "Input model folder")->required();
  cmd->add_option("-o,--output", o->output, "Output folder (absent or empty)")->required();
  cmd->add_option("--to", o->to, "Weight format to write: fp8 or bf16")
      ->required()
      ->check(CLI::IsMember({"fp8", "bf16"}));
  cmd->add_flag("-f,--force", o->force, "Overwrite a non-empty output folder");
  cmd->add_option("--max-shard-mib", o->max_shard_mib, "Largest file, in MiB (4096)");
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all)");
  cmd->callback([o] { run_convert(*o); });
}

}  // namespace dsa::cli
