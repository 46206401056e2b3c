// One optimizer step of training: the forward and backward passes of every micro-batch
// (gradient accumulation), global-norm clipping, AdamW at the step's learning rate, and the
// router-bias update of DeepSeek's aux-loss-free balancing (docs/training-engine.md).
#pragma once

#include <cstdint>
#include <span>

#include "core/thread_pool.h"
#include "model/train_graph.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

namespace dsa::train {

struct StepSettings {
  TrainStepOptions graph;  // its grad_scale is set per micro-batch here
  LrSchedule schedule;
  double clip = 1.0;              // global-norm clip (0: none)
  double bias_update_rate = 0.0;  // router bias: += rate * sign(mean load - load)
};

struct StepStats {
  double loss = 0.0;          // mean LM loss over the micro-batches
  double indexer_loss = 0.0;  // mean indexer KL (when trained)
  double balance_loss = 0.0;
  double grad_norm = 0.0;  // before clipping, over the tensors the optimizer updates
  double lr = 0.0;
  int64_t tokens = 0;  // tokens in the micro-batches
};

// Runs step `step` (0-based) over `micro_batches`, updating `params` and `optimizer` in place.
// `grads` is scratch of the same layout. A NaN or infinite loss or gradient norm is a dsa::Error
// naming the step, raised before anything is updated.
StepStats run_optimizer_step(ParameterBuffer& params, ParameterBuffer& grads, AdamW& optimizer,
                             std::span<const TrainBatch> micro_batches,
                             const StepSettings& settings, int64_t step, ThreadPool& pool);

}  // namespace dsa::train
