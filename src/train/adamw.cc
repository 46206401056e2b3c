#include "train/adamw.h"

#include <cmath>

#include "core/error.h"

namespace dsa::train {

AdamW::AdamW(std::shared_ptr<const ParameterLayout> layout, const AdamWConfig& config,
             const std::function<bool(const TrainTensor&)>& selected)
    : config_(config), m_(layout), v_(layout) {
  const std::vector<TrainTensor>& tensors = layout->tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].trainable && (!selected || selected(tensors[i]))) selected_.push_back(i);
  }
}

void AdamW::step(ParameterBuffer& params, const ParameterBuffer& grads, double lr,
                 ThreadPool& pool) {
  DSA_CHECK(
      params.layout().size() == m_.layout().size() && grads.layout().size() == m_.layout().size(),
      "AdamW: buffers of another layout");
  ++steps_;
  const double b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  const double bc1 = 1.0 - std::pow(b1, double(steps_));
  const double bc2 = 1.0 - std::pow(b2, double(steps_));
  const std::vector<TrainTensor>& tensors = params.layout().tensors();
  for (size_t index : selected_) {
    const TrainTensor& t = tensors[index];
    float* p = params.values().data() + t.offset;
    const float* g = grads.values().data() + t.offset;
    float* m = m_.values().data() + t.offset;
    float* v = v_.values().data() + t.offset;
    const double decay = t.weight_decay ? lr * config_.weight_decay : 0.0;
    // Element-wise, so the split over threads cannot change a result.
    pool.parallel_for(t.numel(), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        double pi = double(p[i]);
        pi -= decay * pi;
        const double gi = double(g[i]);
        const double mi = b1 * double(m[i]) + (1.0 - b1) * gi;
        const double vi = b2 * double(v[i]) + (1.0 - b2) * gi * gi;
        m[i] = float(mi);
        v[i] = float(vi);
        pi -= lr * (double(m[i]) / bc1) / (std::sqrt(double(v[i]) / bc2) + eps);
        p[i] = float(pi);
      }
    });
  }
}

double gradient_norm(const ParameterBuffer& grads, const std::vector<size_t>& tensors) {
  double sum = 0.0;
  const std::vector<TrainTensor>& all = grads.layout().tensors();
  for (size_t index : tensors) {
    for (float g : grads.tensor(all[index])) sum += double(g) * double(g);
  }
  return std::sqrt(sum);
}

void clip_gradients(ParameterBuffer& grads, const std::vector<size_t>& tensors, double norm,
                    double clip) {
  if (!(clip > 0.0) || norm <= clip) return;
  const float factor = float(clip / (norm + 1e-6));
  const std::vector<TrainTensor>& all = grads.layout().tensors();
  for (size_t index : tensors) {
    for (float& g : grads.tensor(all[index])) g *= factor;
  }
}

}  // namespace dsa::train
