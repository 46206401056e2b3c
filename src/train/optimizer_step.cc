#include "train/optimizer_step.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "ops/moe/moe_train.h"

namespace dsa::train {

StepStats run_optimizer_step(ParameterBuffer& params, ParameterBuffer& grads, AdamW& optimizer,
                             std::span<const TrainBatch> micro_batches,
                             const StepSettings& settings, int64_t step, ThreadPool& pool) {
  DSA_CHECK(!micro_batches.empty(), "an optimizer step needs a micro-batch");
  const ModelConfig& config = params.layout().config();
  zero_gradients(grads, pool);
  StepStats stats;
  TrainStepOptions graph = settings.graph;
  graph.grad_scale = 1.0f / float(micro_batches.size());
  std::vector<std::vector<int64_t>> load(size_t(config.num_hidden_layers));
  for (const TrainBatch& batch : micro_batches) {
    const TrainStepResult r = train_step(params, batch, graph, &grads, pool);
    stats.loss += r.lm_loss / double(micro_batches.size());
    stats.indexer_loss += r.indexer_loss / double(micro_batches.size());
    stats.balance_loss += r.balance_loss / double(micro_batches.size());
    stats.tokens += batch.sequences * batch.seq_len;
    for (size_t l = 0; l < r.expert_load.size(); ++l) {
      if (r.expert_load[l].empty()) continue;
      load[l].resize(r.expert_load[l].size(), 0);
      for (size_t e = 0; e < load[l].size(); ++e) load[l][e] += r.expert_load[l][e];
    }
  }
  const double tracked = graph.lm_loss ? stats.loss : stats.indexer_loss;
  if (!std::isfinite(tracked)) {
    fail("the loss is {} at step {}: stopping (the last checkpoint written is kept as it was)",
         tracked, step + 1);
  }
  stats.grad_norm = gradient_norm(grads, optimizer.updated_tensors(), pool);
  if (!std::isfinite(stats.grad_norm)) {
    fail(
        "the gradient norm is {} at step {}: stopping (the last checkpoint written is kept as "
        "it was)",
        stats.grad_norm, step + 1);
  }
  clip_gradients(grads, optimizer.updated_tensors(), stats.grad_norm, settings.clip, pool);
  stats.lr = learning_rate(settings.schedule, step);
  optimizer.step(params, grads, stats.lr, pool);
  if (graph.lm_loss && settings.bias_update_rate > 0.0) {
    for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
      if (load[static_cast<size_t>(l)].empty()) continue;
      update_router_bias(
          load[static_cast<size_t>(l)].data(), int64_t(load[static_cast<size_t>(l)].size()),
          float(settings.bias_update_rate),
          params.data("model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias"));
    }
  }
  return stats;
}

}  // namespace dsa::train
