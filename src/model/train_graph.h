// One training step's forward and backward pass over a batch of sequences, in fp32, with the
// semantics of docs/training-engine.md: MLA in MHA form (dense or DSA-sparse), the lightning
// indexer and its KL loss, dense FFN and MoE, the LM head with cross-entropy. Every op comes from
// ops/ (a fast version with a scalar reference beside it); this file only wires them, keeping
// the activations the backward pass reads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/train_parameters.h"
#include "ops/gemm/sgemm.h"

namespace dsa {

struct TrainBatch {
  std::span<const int32_t> tokens;  // [sequences, seq_len], row-major
  int64_t sequences = 0;            // B
  int64_t seq_len = 0;              // T: each sequence runs at positions 0 .. T-1
  // Next-token targets [B, T] (-1 = not counted). Empty: tokens[b, t+1] for t < T-1, the last
  // position of each sequence not counted.
  std::span<const int32_t> targets;
};

struct TrainStepOptions {
  // kDense or kSparse (the indexer's top-k; every key for rows with at most index_topk keys).
  AttentionMode attention = AttentionMode::kDense;
  bool lm_loss = true;         // the LM loss and its gradients for every non-indexer parameter
  bool indexer_loss = false;   // the indexer KL (over the keys attended) and indexer gradients
  float balance_alpha = 0.0f;  // sequence-wise MoE balance loss weight (0: off)
  // Multiplies every gradient: 1 / micro-batches for gradient accumulation.
  float grad_scale = 1.0f;
  bool record_topk = false;  // keep each layer's selected indices in the result
  // Dense attention only (the warm-up's setting): per layer and row t, the indexer's recall of
  // the main attention, Σ_{s ∈ top-k(I_t)} p_t[s], where p_t is the dense attention summed over
  // heads and L1-normalised (the warm-up's target). 1 for rows with at most index_topk keys.
  bool record_indexer_recall = false;
  // Keep only each layer's input from the forward and recompute the layer before its backward:
  // activation memory of one layer instead of all, for about one more forward pass of compute.
  // Results are bit-identical either way.
  bool recompute_layers = false;
  // The products of the linear layers and the LM head: fp32, or bf16 compute (operands rounded
  // to bf16, sums in fp32; ops/gemm/sgemm.h). Master weights and gradients stay fp32.
  MatmulPrecision matmul = MatmulPrecision::kFp32;
};

struct TrainStepResult {
  double lm_loss = 0.0;                // mean over the counted positions
  int64_t lm_positions = 0;            // counted positions
  std::vector<float> position_losses;  // [B, T] per-position cross-entropy (0 where not counted)
  double indexer_loss = 0.0;           // mean KL over all rows of all indexer layers
  int64_t indexer_rows = 0;
  std::vector<std::vector<float>> indexer_row_kl;  // per layer: [B, T] (indexer layers only)
  double balance_loss = 0.0;                       // summed over MoE layers, mean over sequences
  // Per layer, tokens routed to each expert (empty for dense-FFN layers).
  std::vector<std::vector<int64_t>> expert_load;
  // Per layer with record_topk and sparse attention: [B, T, index_topk] ascending, -1 padded.
  std::vector<std::vector<int32_t>> topk;
  // Per layer with record_indexer_recall: [B, T]; and the best recall any k keys could give,
  // the sum of the k largest p_t[s] (the oracle's: what a perfect indexer would reach).
  std::vector<std::vector<float>> indexer_recall;
  std::vector<std::vector<float>> indexer_oracle_recall;
};

// Runs the step. `grads` (same layout as `params`, or null for a forward-only evaluation)
// receives the gradients, ACCUMULATED (+=) so that micro-batches add up. Bad token ids, targets,
// a sequence longer than max_position_embeddings, or sparse attention without an indexer are a
// dsa::Error.
TrainStepResult train_step(const ParameterBuffer& params, const TrainBatch& batch,
                           const TrainStepOptions& options, ParameterBuffer* grads,
                           ThreadPool& pool);

}  // namespace dsa
