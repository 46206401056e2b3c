// AdamW with decoupled weight decay, bias correction and global-norm gradient clipping, over the
// flat fp32 buffers of train_parameters.h (docs/training-engine.md, "Optimizer"). Matches
// PyTorch's torch.optim.AdamW; the per-element update is computed in double and stored in fp32
// (adamw_update.h).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/thread_pool.h"
#include "model/train_parameters.h"

namespace dsa::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied to tensors with TrainTensor::weight_decay only
};

class AdamW {
 public:
  // Updates the tensors for which `selected` is true (all trainable ones when it is empty);
  // non-trainable tensors (the router bias) are never touched.
  AdamW(std::shared_ptr<const ParameterLayout> layout, const AdamWConfig& config,
        const std::function<bool(const TrainTensor&)>& selected = {});

  // One step at learning rate `lr`: p -= lr·wd·p; m, v moments; p -= lr·m̂/(sqrt(v̂)+eps).
  void step(ParameterBuffer& params, const ParameterBuffer& grads, double lr, ThreadPool& pool);

  const AdamWConfig& config() const { return config_; }
  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t steps) { steps_ = steps; }
  ParameterBuffer& first_moment() { return m_; }
  ParameterBuffer& second_moment() { return v_; }
  const ParameterBuffer& first_moment() const { return m_; }
  const ParameterBuffer& second_moment() const { return v_; }
  const std::vector<size_t>& updated_tensors() const { return selected_; }

 private:
  AdamWConfig config_;
  std::vector<size_t> selected_;  // indices into layout().tensors()
  ParameterBuffer m_, v_;
  int64_t steps_ = 0;
};

// The L2 norm of the gradients of `tensors` (indices into the layout), summed in double on the
// pool in a fixed order of fixed blocks, so it does not depend on the thread count.
double gradient_norm(const ParameterBuffer& grads, const std::vector<size_t>& tensors,
                     ThreadPool& pool);

// Scales every gradient of `tensors` by clip / (norm + 1e-6) when norm > clip (clip > 0).
void clip_gradients(ParameterBuffer& grads, const std::vector<size_t>& tensors, double norm,
                    double clip, ThreadPool& pool);

// Sets every gradient to zero, on the pool (760 MB for the small preset).
void zero_gradients(ParameterBuffer& grads, ThreadPool& pool);

}  // namespace dsa::train
