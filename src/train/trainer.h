// `dsa train`: the training loop. Stages (docs/training-engine.md; the DSA recipe in
// docs/dsa-recipe.md):
//   dense   every parameter but the indexers on the LM loss, dense attention (our "V3.1")
//   warmup  the indexers only, on their KL to the dense attention; the rest frozen
//   sparse  DSA on: top-k attention; the LM loss trains the model, the indexer KL over the
//           selected keys trains the indexers (their inputs detached)
// Each step draws grad_accum micro-batches of batch x seq tokens, runs one optimizer step, logs
// one JSON line, and every save_every steps (and at the end) writes a checkpoint that `--resume`
// continues from exactly: the same seed and data give the same losses bit for bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "ops/gemm/sgemm.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

namespace dsa::train {

enum class Stage { kDense, kWarmup, kSparse };
Stage parse_stage(const std::string& name);  // "dense", "warmup", "sparse"
std::string stage_name(Stage stage);

struct TrainerOptions {
  Stage stage = Stage::kDense;
  std::string init;  // a preset name, a config.json, or a model folder (required for warmup/sparse)
  std::filesystem::path data;  // the output of `dsa data build`
  std::filesystem::path output;
  int64_t steps = 1000;
  int64_t batch = 8;
  int64_t seq = 512;
  int64_t grad_accum = 1;
  LrSchedule schedule;  // its steps is set from `steps`
  AdamWConfig adamw;
  double clip = 1.0;
  uint64_t seed = 1;  // initial weights (for a preset or config) and the data order
  int threads = 0;
  int64_t save_every = 0;  // 0: only at the end
  bool resume = false;
  std::filesystem::path log;   // JSON lines, one per step
  std::filesystem::path plot;  // SVG loss curve
  int64_t eval_every = 0;      // held-out loss every N steps (0: at the end only)
  int64_t eval_windows = 16;   // held-out windows of `seq` tokens per evaluation
  double bias_update_rate = 1e-3;
  float balance_alpha = 0.0f;
  bool recompute = false;  // TrainStepOptions::recompute_layers: less memory, same numbers
  // TrainStepOptions::matmul: the products in fp32, or bf16 compute (fp32 master weights).
  MatmulPrecision precision = MatmulPrecision::kFp32;
  std::optional<std::filesystem::path> tokenizer;  // copied into the output (default: the data's)
};

// Runs the training; throws dsa::Error for bad input (the last checkpoint stays intact).
void run_training(const TrainerOptions& options);

}  // namespace dsa::train
