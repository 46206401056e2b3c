// The training-speed benchmark behind `dsa bench train` (docs/training-speed.md): whole optimizer
// steps (forward, backward, clipping, AdamW, the router-bias update) on one fixed batch of random
// tokens, timed after warm-up, with
//   * the model FLOPs of a step (count_train_flops): 6 x the active parameters per token for the
//     matrix products, plus attention's dot products, plus the indexer's when it runs;
//   * a breakdown: the forward pass alone, forward + backward, and the step's matrix products
//     alone (the same linear-layer calls at the same shapes, on the same weights; the LM head
//     through the fused head + loss op, as the step runs it) against the fp32 FMA peak;
//   * optionally the PyTorch eager baseline (scripts/bench_train_torch.py) run in the same
//     process tree on the same weights, batch, sequence length and threads.
// The optimizer step itself is passed in (the train/ layer builds on this one), so this file
// holds the measurement, the accounting and the report.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/train_graph.h"
#include "model/train_parameters.h"
#include "perf/machine_peaks.h"
#include "perf/timing.h"

namespace dsa {

// The stages of `dsa train --stage`, as train-step options (trainer.cc's mapping):
//   dense   LM loss, dense attention (the indexer does not run)
//   warmup  the indexer KL only (dense attention; the main model runs forward only)
//   sparse  top-k attention, LM loss + the indexer KL over the selected keys
// Throws dsa::Error for another name.
TrainStepOptions train_bench_stage(const std::string& stage);

// Model FLOPs per token of one training step. Only the arithmetic of matrix products and
// attention dot products counts (a multiply-add is 2 FLOP); norms, RoPE, softmax exponentials,
// the optimizer and the recomputation flash-style backward passes do are left out, as in the
// usual 6N accounting. A backward pass costs 2x its forward (dx and dW), so a trained product
// costs 3x its forward, a frozen one 1x.
struct TrainFlops {
  // Weights of the matrix products one token passes through in the main model: every layer's
  // attention projections, its dense FFN or its router, the num_experts_per_tok routed experts
  // and the shared experts, and the LM head (the embedding is a lookup, not a product).
  int64_t active_params = 0;
  // The indexers' projections (wq_b, wk, weights_proj) when the step runs the indexer.
  int64_t indexer_params = 0;
  double matmul = 0;     // (6 or 2) x active_params + (4 or 2) x indexer_params
  double attention = 0;  // 2·H·(qk + v)·K_t forward, x3 when trained, mean over positions t
  double indexer = 0;    // scores 2·Hi·(Di + 1)·(t + 1) (x3 with the KL), the KL's target
                         // 2·H·qk·K_t, mean over t
  double total() const { return matmul + attention + indexer; }
};
TrainFlops count_train_flops(const ModelConfig& config, int64_t seq,
                             const TrainStepOptions& options);

// One matrix product of the step's linear layers: y[m, n] = x[m, k]·Wᵀ forward, and in the
// backward dx (when `dx`) and dW (when `dw`). `chunk` > 0 marks the LM head, which the step runs
// fused with the loss (lm_head_cross_entropy) in chunks of that many rows.
struct TrainGemm {
  std::string weight;  // the parameter's checkpoint name
  int64_t m = 0, n = 0, k = 0;
  bool dx = true, dw = true;
  int64_t chunk = 0;
  double flops() const;
};
// The products of one step of `rows` tokens: per layer the attention projections (and the
// indexer's with dW only, when it runs), the dense MLP or router + routed experts (their
// batches padded to multiples of 16 as train_ffn.cc does, rows from `expert_load`) + shared
// experts, then the LM head in chunks of `lm_head_chunk` rows. Frozen products (the main model
// in the warm-up stage) have neither dx nor dw.
std::vector<TrainGemm> train_gemms(const ModelConfig& config, int64_t rows,
                                   const std::vector<std::vector<int64_t>>& expert_load,
                                   const TrainStepOptions& options, int64_t lm_head_chunk);

struct TrainBenchConfig {
  int64_t batch = 4;
  int64_t seq = 512;
  int warmup = 1;  // untimed optimizer steps first
  int runs = 5;    // timed optimizer steps
  TrainStepOptions graph;
  uint64_t seed = 1;          // the token batch
  bool breakdown = true;      // also time the forward, forward + backward and the GEMMs alone
  int64_t lm_head_chunk = 0;  // LM-head rows per chunk; 0: train_step's choice for the vocabulary
};
// Throws dsa::Error naming the field: batch < 1, seq < 2 or beyond max_position_embeddings,
// warmup < 0, runs < 1, a stage the model cannot run (sparse without an indexer).
void validate(const TrainBenchConfig& config, const ModelConfig& model);

// The benchmark's batch: [batch, seq] token ids drawn uniformly from the vocabulary (splitmix64
// of the seed, the same on every platform).
std::vector<int32_t> train_bench_tokens(const ModelConfig& model, int64_t batch, int64_t seq,
                                        uint64_t seed);

// The starting parameters for --init: a model folder (loaded), a config.json or a preset name
// (random weights from `seed`, bf16-valued as `dsa train` starts them).
ParameterBuffer train_bench_parameters(const std::string& init, uint64_t seed, ThreadPool& pool);

struct TrainBenchResult {
  int64_t tokens_per_step = 0;
  int warmup = 0;                    // untimed steps before the timed ones (per round)
  TrainFlops flops;                  // per token
  std::vector<double> step_seconds;  // timed optimizer steps
  // The process's CPU time during each timed step (all threads, spinning included): on a shared
  // machine, with one thread, the work itself; with more, how busy the threads were.
  std::vector<double> step_cpu_seconds;
  std::vector<double> losses;  // LM loss of every step, warm-up included (or the indexer
                               // KL in the warm-up stage)
  // The breakdown (empty without it): forward alone, forward + backward, the GEMMs alone.
  std::vector<double> forward_seconds, forward_backward_seconds, gemm_seconds;
  double gemm_flops = 0;  // of one pass over train_gemms

  double step_flops() const { return flops.total() * double(tokens_per_step); }
  TimingStats step() const { return summarize(step_seconds); }
  TimingStats tokens_per_second() const;  // tokens_per_step / step seconds, over the runs
};

// One optimizer step over `batch` (0-based step index); returns its loss.
using OptimizerStepFn = std::function<double(const TrainBatch& batch, int64_t step)>;

// Runs config.warmup + config.runs optimizer steps with `step`, and the breakdown on `params`
// (which `step` updates in between: speed does not depend on the values).
TrainBenchResult run_train_bench(const ParameterBuffer& params, const TrainBenchConfig& config,
                                 const OptimizerStepFn& step, ThreadPool& pool);

// ---- the PyTorch eager baseline ------------------------------------------------------------

// The source tree holding scripts/bench_train_torch.py: `hint` if given (an error if it lacks
// the script), else the first parent folder of this executable that has it; nullopt if none.
std::optional<std::filesystem::path> find_source_tree(const std::filesystem::path& hint = {});

// `git describe`-like commit of the source tree ("35f62d2", "+dirty" with local changes), or
// "unknown" without git.
std::string source_commit(const std::filesystem::path& tree);

struct TorchBaselineConfig {
  std::filesystem::path python = "/usr/bin/python3";
  std::filesystem::path script;       // scripts/bench_train_torch.py
  std::filesystem::path model_dir;    // written by write_bench_model
  std::filesystem::path tokens_file;  // written by write_bench_tokens
  std::string stage = "dense";
  std::string precision = "fp32";  // bf16: the forward under torch.autocast
  int64_t batch = 0, seq = 0;
  int threads = 1;
  int warmup = 1, runs = 5;
  // More NAME=VALUE settings for the script's environment (after the thread counts, so they can
  // override them), e.g. OMP_WAIT_POLICY=PASSIVE.
  std::vector<std::string> env;
};

struct TorchBaselineResult {
  std::string torch_version;
  int threads = 0;
  std::vector<double> step_seconds;
  std::vector<double> losses;  // warm-up included
};

// The model folder the script loads: config.json and model.safetensors holding the exact fp32
// values the engine trains (BF16 when they all are bf16 values, as starting weights are; F32
// otherwise).
void write_bench_model(const ParameterBuffer& params, const std::filesystem::path& dir);
void write_bench_tokens(std::span<const int32_t> tokens, int64_t batch, int64_t seq,
                        const std::filesystem::path& file);

// Runs the script (OPENBLAS_NUM_THREADS and OMP_NUM_THREADS set to `threads`, then `env`; its
// stderr goes to ours) and parses its JSON. A failed run or bad output is a dsa::Error quoting it.
TorchBaselineResult run_torch_baseline(const TorchBaselineConfig& config);
// Parses the script's JSON output (exposed for tests).
TorchBaselineResult parse_torch_baseline(const std::string& json_text);

// ---- the report -----------------------------------------------------------------------------

struct TrainBenchReport {
  std::string model;  // folder or preset name
  std::string architecture;
  int64_t params = 0;  // main-model parameters
  std::string stage;
  bool recompute = false;  // TrainStepOptions::recompute_layers
  int threads = 0;
  std::string cpu, simd_target, version, commit;
  std::string sgemm;               // the training products' kernel: sgemm_implementation(), or
                                   // sgemm_bf16_implementation() for bf16 compute
  std::string precision = "fp32";  // the products': "fp32" or "bf16" (matmul_precision_name)
  uint64_t peak_rss = 0;  // this process's peak resident memory (the dsa steps; torch runs apart)
  double load_average = -1;
  MachinePeaks peaks;
  bool peak_given = false;  // --peak-gflops instead of a measurement
  int rounds = 1;           // dsa-then-torch rounds whose timed steps are pooled
  TrainBenchResult dsa;
  std::optional<TorchBaselineResult> torch;
  std::vector<std::string> torch_env;  // --torch-env settings, printed with the torch row
};

// The markdown report: header lines, the engine table (dsa, and torch when run) with step
// time median ± half the min-max range, tokens/s, GFLOP/s and % of the fp32 FMA peak, the
// ratio, the breakdown and the first-step losses of both.
std::string format_train_report(const TrainBenchReport& report);
// The same as one JSON object.
nlohmann::json train_report_json(const TrainBenchReport& report);

}  // namespace dsa
