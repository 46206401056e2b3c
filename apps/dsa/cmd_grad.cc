// `dsa grad`: the loss and the fp32 gradient of every trainable parameter for one sequence, with
// the training semantics of docs/training-engine.md, for checking the training engine against an
// independent implementation.
//
//   dsa grad -m DIR --tokens "ID ..." [--attention dense|sparse] [--loss lm|indexer]
//            [-t THREADS] -o FILE.safetensors
//
// lm       the mean next-token cross-entropy over positions 0 .. T-2
// indexer  the mean over rows (of every indexer layer) of KL(p || softmax(I)); with dense
//          attention p is the dense attention (the warm-up loss), with sparse attention the
//          selected keys' (the sparse-stage loss). Only indexer parameters get a gradient.
// The output holds every trainable parameter under its checkpoint name (zeros where the loss does
// not depend on it), fp32; the metadata holds "loss" (shortest round-trip decimal) and the
// settings.
#include <fmt/format.h>

#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "model/train_graph.h"
#include "model/train_parameters.h"
#include "token_input.h"

namespace dsa::cli {
namespace {

struct GradOptions {
  std::string model_dir;
  std::string tokens;
  std::string attention = "dense";
  std::string loss = "lm";
  int threads = 0;
  std::string output;
};

void run_grad(const GradOptions& o) {
  const std::vector<int32_t> tokens = parse_token_ids(o.tokens, "--tokens");
  if (tokens.size() < 2) fail("--tokens: need at least 2 tokens, got {}", tokens.size());
  if (o.loss != "lm" && o.loss != "indexer") {
    fail("--loss must be lm or indexer, got '{}'", o.loss);
  }
  TrainStepOptions options;
  options.attention = parse_attention_mode(o.attention);
  if (options.attention == AttentionMode::kAuto) {
    fail("--attention must be dense or sparse for training, got 'auto'");
  }
  options.lm_loss = o.loss == "lm";
  options.indexer_loss = o.loss == "indexer";

  ThreadPool pool(o.threads);
  const ParameterBuffer params = load_parameters(o.model_dir, pool);
  ParameterBuffer grads(params.shared_layout());
  const TrainBatch batch{
      .tokens = tokens, .sequences = 1, .seq_len = int64_t(tokens.size()), .targets = {}};
  const TrainStepResult result = train_step(params, batch, options, &grads, pool);
  const double loss = options.lm_loss ? result.lm_loss : result.indexer_loss;

  SafetensorsWriter writer;
  add_parameter_tensors(grads, DType::F32, writer, "",
                        [](const TrainTensor& t) { return t.trainable; });
  writer.set_metadata("format", "pt");
  writer.set_metadata("loss", fmt::format("{}", loss));
  writer.set_metadata("loss_kind", o.loss);
  writer.set_metadata("attention", attention_mode_name(options.attention).data());
  writer.set_metadata("tokens", fmt::format("{}", tokens.size()));
  writer.write(o.output);
  fmt::print(stderr,
             "{} loss {:.6f} over {} tokens ({} attention); gradients of {} tensors in {}\n",
             o.loss, loss, tokens.size(), attention_mode_name(options.attention),
             writer.tensors().size(), o.output);
}

}  // namespace

void register_grad(CLI::App& app) {
  auto options = std::make_shared<GradOptions>();
  CLI::App* cmd = app.add_subcommand(
      "grad", "Write the loss and the gradient of every trainable parameter (.safetensors)");
  cmd->add_option("-m,--model", options->model_dir, "Model folder (config.json + safetensors)")
      ->required();
  cmd->add_option("--tokens", options->tokens, "Token ids, e.g. \"0 17 42\"")->required();
  cmd->add_option("--attention", options->attention, "dense (default) or sparse");
  cmd->add_option("--loss", options->loss,
                  "lm (default: next-token cross-entropy) or indexer (the indexer's KL loss)");
  cmd->add_option("-t,--threads", options->threads, "Threads (default: all hardware threads)");
  cmd->add_option("-o,--output", options->output, "Output .safetensors file")->required();
  cmd->callback([options] { run_grad(*options); });
}

}  // namespace dsa::cli
