// `dsa train`: trains a model (src/train/trainer.h; docs/training.md).
//
//   dsa train --stage dense --init PRESET|CONFIG.json|DIR --data DIR -o OUT
//             [--steps N] [--batch B] [--seq L] [--grad-accum A] [--lr LR] [--min-lr LR]
//             [--warmup W] [--weight-decay WD] [--clip C] [--seed S] [-t N] [--save-every N]
//             [--resume] [--log FILE.jsonl] [--plot FILE.svg]
#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "train/trainer.h"

namespace dsa::cli {
namespace {

struct TrainArgs {
  std::string stage = "dense";
  std::string precision = "fp32";
  std::string data, output, log, plot, tokenizer;
  train::TrainerOptions options;
};

}  // namespace

void register_train(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  train::TrainerOptions& o = args->options;
  CLI::App* cmd = app.add_subcommand("train",
                                     "Train a model: dense pre-training, the indexer "
                                     "warm-up or sparse (DSA) training");
  cmd->add_option("--stage", args->stage, "dense (default), warmup or sparse");
  cmd->add_option("--init", o.init,
                  "Starting point: a preset (dsa init-model --list-presets), a config.json "
                  "(random weights) or a model folder")
      ->required();
  cmd->add_option("--data", args->data, "Token data from `dsa data build`")->required();
  cmd->add_option("-o,--output", args->output, "Output model folder (checkpoints go here)")
      ->required();
  cmd->add_option("--steps", o.steps, "Optimizer steps (default 1000)");
  cmd->add_option("--batch", o.batch, "Sequences per micro-batch (default 8)");
  cmd->add_option("--seq", o.seq, "Tokens per sequence (default 512)");
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per step (default 1)");
  cmd->add_option("--lr", o.schedule.lr, "Peak learning rate (default 3e-4)");
  cmd->add_option("--min-lr", o.schedule.min_lr, "Learning rate at the last step (default 3e-5)");
  cmd->add_option("--warmup", o.schedule.warmup, "Linear warm-up steps (default 0)");
  cmd->add_option("--weight-decay", o.adamw.weight_decay,
                  "AdamW decoupled weight decay on 2-D weights (default 0.1)");
  cmd->add_option("--clip", o.clip, "Global gradient-norm clip, 0 for none (default 1.0)");
  cmd->add_option("--seed", o.seed, "Seed of the initial weights and the data order (default 1)");
  cmd->add_option("-t,--threads", o.threads, "Threads (default: all hardware threads)");
  cmd->add_option("--save-every", o.save_every, "Checkpoint every N steps (default: at the end)");
  cmd->add_flag("--resume", o.resume, "Continue from the checkpoint in the output folder");
  cmd->add_option("--log", args->log, "Write one JSON line per step to this file");
  cmd->add_option("--plot", args->plot, "Draw the loss curves (training, held-out) as an SVG");
  cmd->add_option("--eval-every", o.eval_every,
                  "Held-out loss every N steps (default: at the last step only)");
  cmd->add_option("--eval-windows", o.eval_windows,
                  "Held-out windows of --seq tokens per evaluation (default 16)");
  cmd->add_option("--bias-update-rate", o.bias_update_rate,
                  "MoE router bias update speed of aux-loss-free balancing (default 0.001)");
  cmd->add_option("--balance-alpha", o.balance_alpha,
                  "Weight of the sequence-wise MoE balance loss (default 0: off)");
  cmd->add_flag("--recompute", o.recompute,
                "Recompute each layer's forward in the backward: activation memory of one layer "
                "plus the layer inputs, for about a third more compute; the same numbers");
  cmd->add_option("--precision", args->precision,
                  "The matrix products (linear layers, LM head): fp32, or bf16 compute "
                  "(operands rounded to bf16, fp32 sums; master weights and optimizer state stay "
                  "fp32). A resume repeats it")
      ->default_str("fp32");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json to ship with the model (default: the data's)");
  cmd->callback([args] {
    train::TrainerOptions options = args->options;
    options.stage = train::parse_stage(args->stage);
    options.precision = parse_matmul_precision(args->precision, "--precision");
    options.data = args->data;
    options.output = args->output;
    options.log = args->log;
    options.plot = args->plot;
    if (!args->tokenizer.empty()) options.tokenizer = args->tokenizer;
    try {
      train::run_training(options);
    } catch (const std::filesystem::filesystem_error& e) {
      // A folder that cannot be created, a log that cannot be truncated: the environment's
      // doing, not the engine's, so a user error (exit 1) rather than an internal one.
      throw Error(e.what());
    }
  });
}

}  // namespace dsa::cli
